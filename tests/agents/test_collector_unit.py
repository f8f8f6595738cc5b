"""Collector HTTP behaviour with an in-memory Publisher (same protocol as Kafka's)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.collector import (
    CollectorSettings,
    Message,
    PublishError,
    create_collector_app,
)
from agents.intake import Rejection, parse_body
from agents.producer import ProduceTopics
from triggers.events import Event, decode_event_record


class MemoryPublisher:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[Message] = []
        self.fail = fail
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def publish(self, messages: Sequence[Message]) -> None:
        if self.fail:
            raise PublishError("broker down")
        self.messages.extend(messages)


async def _client(publisher: MemoryPublisher, **settings: Any) -> TestClient[Any, Any]:
    topics = ProduceTopics(events="ev", dead_letters="dl")
    app = create_collector_app(publisher, CollectorSettings(topics=topics, **settings))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def test_parse_body_array_and_ndjson() -> None:
    items = parse_body(b' [{"user_id": "a", "ts": 1, "type": "v"}, {}]', ndjson=False)
    assert isinstance(items[0], Event) and items[0].user_id == "a"
    assert isinstance(items[1], Rejection) and (items[1].index, items[1].reason) == (
        1, "missing_field")
    items = parse_body(b'{"user_id": "a", "ts": 1, "type": "v"}\r\n\n[1]\n', ndjson=True)
    assert isinstance(items[0], Event)
    assert isinstance(items[1], Rejection) and (items[1].index, items[1].reason) == (
        2, "not_object")
    broken = parse_body(b"[{", ndjson=False)
    assert len(broken) == 1 and isinstance(broken[0], Rejection)
    assert broken[0].reason == "invalid_json"


async def test_collector_publishes_and_answers() -> None:
    publisher = MemoryPublisher()
    client = await _client(publisher)
    try:
        assert publisher.started
        body = orjson.dumps([{"user_id": "a", "ts": 1, "type": "view"}, {"user_id": "b"}])
        resp = await client.post("/events", data=body)
        assert resp.status == 202
        assert (await resp.json())["accepted"] == 1
        assert [(t, k) for t, k, _ in publisher.messages] == [("ev", b"a"), ("dl", None)]
        assert orjson.loads(publisher.messages[1][2])["where"] == 1
    finally:
        await client.close()
    assert publisher.stopped


async def test_collector_lists_at_most_the_error_limit() -> None:
    client = await _client(MemoryPublisher(), max_errors_listed=2)
    try:
        resp = await client.post("/events", data=b"[1, 2, 3]")
        assert resp.status == 400
        body = await resp.json()
        assert (body["rejected"], len(body["errors"]), body["errors_truncated"]) == (3, 2, True)
    finally:
        await client.close()


@pytest.mark.parametrize("payload", [b'[{"user_id": "a", "ts": 1, "type": "view"}]'])
async def test_collector_answers_503_when_kafka_fails(payload: bytes) -> None:
    client = await _client(MemoryPublisher(fail=True))
    try:
        resp = await client.post("/events", data=payload)
        assert resp.status == 503
        assert (await resp.json())["error"] == "kafka_unavailable"
    finally:
        await client.close()


class FakeProducer:
    """aiokafka's producer surface the KafkaPublisher uses; every send stored."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None) -> Any:
        self.records.append((topic, key, value, partition))
        future: Any = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_kafka_publisher_batches_events_by_partition_by_default() -> None:
    from agents.collector import KafkaPublisher
    from agents.record_batching import partition_for
    from triggers.events import decode_event_record

    producer = FakeProducer()
    publisher = KafkaPublisher(producer)
    events = [("ev", f"u{n % 3}".encode(), orjson.dumps({"user_id": f"u{n % 3}", "ts": n,
                                                          "type": "view"})) for n in range(30)]
    await asyncio.gather(publisher.publish(events[:15]), publisher.publish(events[15:]),
                         publisher.publish([("dl", None, b'{"reason": "x"}')]))
    event_records = [r for r in producer.records if r[0] == "ev"]
    assert len(event_records) <= 3  # one record per partition, shared by both requests
    seen = []
    for _, key, value, partition in event_records:
        assert key is None  # a batch
        for item in decode_event_record(value):
            assert isinstance(item, Event)
            assert partition == partition_for(item.user_id.encode(), 4)
            seen.append((item.user_id, item.ts))
    assert sorted(seen) == sorted((f"u{n % 3}", n) for n in range(30))
    for user in ("u0", "u1", "u2"):  # each user's events in order
        times = [ts for u, ts in seen if u == user]
        assert times == sorted(times)
    assert [r[0] for r in producer.records].count("dl") == 1


async def test_kafka_publisher_sends_a_requests_records_without_waiting_for_the_linger() -> None:
    """Latency (issue 25): a request's records go once the loop turns; the
    linger (an hour here) only bounds senders that keep adding."""
    from agents.collector import KafkaPublisher
    from agents.record_batching import BatchLimits

    producer = FakeProducer()
    publisher = KafkaPublisher(producer, BatchLimits(linger_ms=3_600_000))
    events = [("ev", f"u{n}".encode(), orjson.dumps({"user_id": f"u{n}", "ts": n,
                                                     "type": "view"})) for n in range(8)]
    task = asyncio.ensure_future(publisher.publish(events))
    for _ in range(10):  # a few loop turns, no clock
        await asyncio.sleep(0)
    assert task.done() and task.exception() is None
    assert sum(len(decode_event_record(r[2])) for r in producer.records) == 8


async def test_collector_dead_letters_an_event_too_far_ahead_of_its_clock() -> None:
    """Issue 19: a view stamped year 9999 was taken (triggers.host.check_future)."""
    now = 1_700_000_000_000
    publisher = MemoryPublisher()
    client = await _client(publisher, clock=lambda: now)
    try:
        body = orjson.dumps([{"user_id": "a", "ts": 253_402_300_799_000, "type": "view"},
                             {"user_id": "a", "ts": now + 3_600_000, "type": "view"},
                             {"user_id": "a", "ts": now + 3_600_001, "type": "view"}])
        resp = await client.post("/events", data=body)
        answer = await resp.json()
        assert resp.status == 202 and answer["accepted"] == 1
        assert [(e["index"], e["reason"]) for e in answer["errors"]] == [
            (0, "future_ts"), (2, "future_ts")]
        assert [t for t, _, _ in publisher.messages] == ["dl", "ev", "dl"]
        dead = orjson.loads(publisher.messages[0][2])
        assert (dead["reason"], dead["where"]) == ("future_ts", 0)
        metrics = await (await client.get("/metrics")).text()
        assert ('scenetrigger_collector_events_total{reason="future_ts",result="rejected"} 2.0'
                in metrics)
    finally:
        await client.close()
    off = MemoryPublisher()
    client = await _client(off, clock=lambda: now, max_future_ms=None)
    try:
        resp = await client.post("/events", data=orjson.dumps(
            {"user_id": "a", "ts": 253_402_300_799_000, "type": "view"}))
        assert resp.status == 202 and [t for t, _, _ in off.messages] == ["ev"]
    finally:
        await client.close()
