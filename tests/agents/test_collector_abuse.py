"""The collector under abuse (issue 11), in process with an in-memory
publisher: huge arrays stop at the event limit, deep nesting is one reject
(the request's good events are stored), an event over the producer's record
size is refused alone before anything is sent, a partial publish says
exactly what was stored and an Idempotency-Key retry sends only the rest,
non-UTF-8 tokens and slow bodies get a 4xx."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.collector import CollectorSettings, Message, PublishError, create_collector_app
from agents.intake import TooManyEvents, parse_body
from agents.producer import ProduceTopics

EVENT = {"user_id": "u", "ts": 1, "type": "view"}


class FlakyPublisher:
    """Stores messages; with ``refuse`` set, refuses those whose position in
    a publish call is in it (as Kafka failing part of a request)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refuse: set[int] = set()

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, messages: Sequence[Message]) -> None:
        stored = frozenset(i for i in range(len(messages)) if i not in self.refuse)
        self.messages += [m for i, m in enumerate(messages) if i in stored]
        if len(stored) < len(messages):
            raise PublishError("KafkaTimeoutError: broker gone", stored)


async def _client(publisher: FlakyPublisher, **settings: Any) -> TestClient[Any, Any]:
    conf = CollectorSettings(topics=ProduceTopics(events="ev", dead_letters="dl"), **settings)
    client: TestClient[Any, Any] = TestClient(TestServer(create_collector_app(publisher, conf),
                                                         host="127.0.0.1"))
    await client.start_server()
    return client


def test_a_huge_array_stops_at_the_event_limit_fast() -> None:
    body = b"[" + b",".join([b"0"] * 4_000_000) + b"]"  # 8 MB, 4 M items
    tracemalloc.start()
    try:
        with pytest.raises(TooManyEvents):
            parse_body(body, ndjson=False, max_events=10_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024  # parsed whole it took 10 GB (and 74 s)
    deep = b"[" * 8_000_000
    rejected = parse_body(deep, ndjson=False, max_events=10_000)
    assert [r.reason for r in rejected] == ["invalid_json"]  # type: ignore[union-attr]


def test_rejected_items_keep_a_capped_raw() -> None:
    big = orjson.dumps([{"user_id": "u", "ts": "x" * 100_000, "type": "v"}])
    (item,) = parse_body(big, ndjson=False)
    assert item.reason == "wrong_type" and len(item.raw) <= 4_096  # type: ignore[union-attr]


def test_array_items_split_past_brackets_in_strings() -> None:
    body = orjson.dumps([{**EVENT, "q": "]},[{\"\\"}, [1], {**EVENT, "user_id": "v"}])
    items = parse_body(body, ndjson=False)
    assert [getattr(i, "user_id", None) or i.reason for i in items] == [  # type: ignore[union-attr]
        "u", "not_object", "v"]
    assert items[0].fields["q"] == "]},[{\"\\"  # type: ignore[union-attr]


@pytest.mark.parametrize("body", [b"[1,2]]", b"[1] x", b"[1", b"[{"])
def test_a_body_that_is_not_one_array_is_one_invalid_json(body: bytes) -> None:
    items = parse_body(body, ndjson=False)
    assert [(i.index, i.reason) for i in items] == [(0, "invalid_json")]  # type: ignore[union-attr]


async def test_deep_nesting_rejects_that_event_and_stores_the_good_ones() -> None:
    publisher = FlakyPublisher()
    client = await _client(publisher)
    try:
        nested: Any = 0
        for _ in range(300):
            nested = [nested]
        raw = (b"[" + orjson.dumps(EVENT) + b"," + orjson.dumps({**EVENT, "x": "@"})
               .replace(b'"@"', b"[" * 300 + b"]" * 300) + b"]")
        resp = await client.post("/events", data=raw)
        body = await resp.json()
        assert resp.status == 202, body  # was 500, and the good event was lost
        assert (body["accepted"], body["rejected"]) == (1, 1)
        assert body["errors"][0]["reason"] == "too_deep"
        assert [t for t, _, _ in publisher.messages] == ["ev", "dl"]
    finally:
        await client.close()


async def test_an_event_over_the_record_size_is_refused_alone_before_any_send() -> None:
    publisher = FlakyPublisher()
    client = await _client(publisher, max_record_bytes=2_000)
    try:
        events = [EVENT, {**EVENT, "blob": "x" * 5_000}, {**EVENT, "user_id": "w"}]
        resp = await client.post("/events", data=orjson.dumps(events))
        body = await resp.json()
        assert resp.status == 202
        assert (body["accepted"], body["rejected"]) == (2, 1)
        assert body["errors"][0] == {"index": 1, "reason": "too_large",
                                     "detail": body["errors"][0]["detail"]}
        assert [(t, k) for t, k, _ in publisher.messages] == [
            ("ev", b"u"), ("dl", None), ("ev", b"w")]
    finally:
        await client.close()


async def test_a_partial_publish_says_what_was_stored_and_a_keyed_retry_sends_the_rest() -> None:
    publisher = FlakyPublisher()
    client = await _client(publisher)
    events = [{**EVENT, "user_id": f"u{i}"} for i in range(5)]
    data = orjson.dumps(events)
    headers = {"Idempotency-Key": "req-1"}
    try:
        publisher.refuse = {2, 3}
        resp = await client.post("/events", data=data, headers=headers)
        body = await resp.json()
        assert resp.status == 503
        assert (body["stored"], body["not_stored"]) == (3, [2, 3])
        publisher.refuse = set()
        resp = await client.post("/events", data=data, headers=headers)
        assert resp.status == 202 and (await resp.json())["accepted"] == 5
        again = await client.post("/events", data=data, headers=headers)
        assert again.status == 202 and (await again.json())["replayed"] is True
        # every event stored exactly once over the three tries
        assert sorted(k or b"" for _, k, _ in publisher.messages) == [f"u{i}".encode()
                                                                for i in range(5)]
        other = await client.post("/events", data=b"[" + orjson.dumps(EVENT) + b"]",
                                  headers=headers)
        assert other.status == 422
    finally:
        await client.close()


async def test_non_utf8_authorization_is_401_not_500() -> None:
    client = await _client(FlakyPublisher(), token="s3cret")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\n[]")
        await writer.drain()
        status = (await reader.readline()).split()[1]
        writer.close()
        assert status == b"401"
    finally:
        await client.close()


async def test_a_slow_body_is_timed_out() -> None:
    client = await _client(FlakyPublisher(), read_timeout_s=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[")
        await writer.drain()
        status = (await asyncio.wait_for(reader.readline(), 5)).split()[1]
        writer.close()
        assert status == b"408"
    finally:
        await client.close()


async def test_too_many_concurrent_requests_are_told_to_come_back() -> None:
    client = await _client(FlakyPublisher(), read_timeout_s=5, max_concurrent=1)
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[")
        await writer.drain()
        # Wait for the slow request to hold the one slot (a condition, not a fixed sleep):
        # until it does, a post is served normally.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            resp = await client.post("/events", data=orjson.dumps([EVENT]))
            if resp.status != 200 or loop.time() > deadline:
                break
            await asyncio.sleep(0.01)
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        writer.close()
    finally:
        await client.close()


def test_the_command_refuses_to_start_without_a_token_unless_no_auth(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from scenetrigger.cli.main import build_parser
    from scenetrigger.cli.run.collector import TOKEN_ENV, settings_from_args
    from triggers.errors import SceneTriggerError

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = build_parser(["collector"]).parse_args(["collector"])
    with pytest.raises(SceneTriggerError, match="--no-auth"):
        settings_from_args(args)
    open_args = build_parser(["collector"]).parse_args(["collector", "--no-auth"])
    assert settings_from_args(open_args).token is None
    monkeypatch.setenv(TOKEN_ENV, "t0ken")
    assert settings_from_args(args).token == "t0ken"


@pytest.mark.parametrize("command", ["collector", "produce"])
def test_topic_prefix_names_the_topics_the_worker_of_that_prefix_reads(command: str) -> None:
    from agents.settings import TopicNames
    from agents.topics import DEAD_LETTERS, EVENTS
    from scenetrigger.cli.main import build_parser
    from scenetrigger.cli.support import produce_topics
    from triggers.errors import SceneTriggerError

    def topics(*extra: str) -> tuple[str, str]:
        positional = ["x.jsonl"] if command == "produce" else []
        args = build_parser([command]).parse_args([command, *positional, *extra])
        got = produce_topics(args)
        return got.events, got.dead_letters

    worker = TopicNames.with_prefix("shop")
    assert topics("--topic-prefix", "shop") == (worker.events, worker.dead_letters)
    assert topics() == (EVENTS, DEAD_LETTERS)  # the shared names
    assert topics("--topic-prefix", "shop", "--topic", "raw") == ("raw", worker.dead_letters)
    with pytest.raises(SceneTriggerError, match="must differ"):
        topics("--topic", "t", "--dead-letter-topic", "t")
