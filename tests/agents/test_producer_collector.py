"""Producer and HTTP collector against a real Kafka broker (no mocks)."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.partitioner import DefaultPartitioner

from agents.collector import CollectorSettings, KafkaPublisher, create_collector_app
from agents.kafka_clients import new_producer
from agents.producer import ProduceTopics, ensure_topics
from scenetrigger.cli.main import build_parser
from scenetrigger.cli.run.produce import produce_file
from scenetrigger.runtime.sources import read_rees46
from tests.agents.kafka_read import read_topic, record_events, unique_topic
from tests.paths import REES46_SAMPLE
from triggers.events import Event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REES46 = REES46_SAMPLE  # tests.paths: ../shared beside the repo, or $SCENETRIGGER_SHARED


def _args(*argv: str) -> argparse.Namespace:
    return build_parser(["produce", *argv]).parse_args(["produce", *argv])


def _expected_partition(key: bytes, partitions: int) -> int:
    ids = list(range(partitions))
    result: int = DefaultPartitioner()(key, ids, ids)
    return result


async def test_rees46_sample_lands_keyed_by_user_on_four_partitions(
    kafka_bootstrap: str,
) -> None:
    events_topic, dl_topic = unique_topic("ev"), unique_topic("dl")
    with REES46.open("rb") as fh:
        expected = [ev for _, ev in read_rees46(fh) if isinstance(ev, Event)]
    assert len(expected) == 8721

    summary = await produce_file(_args(
        str(REES46), "--broker", kafka_bootstrap, "--topic", events_topic,
        "--dead-letter-topic", dl_topic, "--partitions", "4", "--no-progress"))

    assert (summary.sent, summary.rejected) == (len(expected), 0)
    records = await read_topic(kafka_bootstrap, events_topic)
    assert len(records) < len(expected) / 10  # batched: many events per record
    events = record_events(records)
    assert len(events) == len(expected)
    per_partition = Counter(p for p, _ in events)
    assert sorted(per_partition) == [0, 1, 2, 3]
    assert dict(per_partition) == dict(summary.partitions)
    # Every event on the partition its user id key hashes to (as a one-event
    # record keyed by user_id from any producer would be).
    by_user: dict[bytes, list[int]] = defaultdict(list)
    for partition, fields in events:
        key = str(fields["user_id"]).encode()
        assert partition == _expected_partition(key, 4)
        by_user[key].append(fields["ts"])
    # Values are the events' fields, and each user's events keep the file order.
    assert Counter(orjson.dumps(f) for _, f in events) == Counter(
        orjson.dumps(e.fields) for e in expected)
    want_by_user: dict[bytes, list[int]] = defaultdict(list)
    for ev in expected:
        want_by_user[ev.user_id.encode()].append(ev.ts)
    assert by_user == want_by_user
    assert await read_topic(kafka_bootstrap, dl_topic) == []


async def test_rejected_lines_go_to_the_dead_letter_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    events_topic, dl_topic = unique_topic("ev"), unique_topic("dl")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([
        b'{"user_id": "u1", "ts": 1000, "type": "view"}',
        b"{not json",
        b'{"user_id": "u2", "type": "view"}',
        b'{"user_id": 7, "ts": 2000, "type": "cart", "price": 9.5}',
        b'["a list"]',
    ]) + b"\n")

    summary = await produce_file(_args(
        str(path), "--broker", kafka_bootstrap, "--topic", events_topic,
        "--dead-letter-topic", dl_topic, "--no-progress"))

    assert (summary.sent, summary.rejected) == (2, 3)
    assert dict(summary.reasons) == {"invalid_json": 1, "missing_field": 1, "not_object": 1}
    events = await read_topic(kafka_bootstrap, events_topic)
    assert sorted((r.key, orjson.loads(r.value)["ts"]) for r in events) == [
        (b"7", 2000), (b"u1", 1000)]
    dead = sorted((orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, dl_topic)),
                  key=lambda d: d["where"])
    assert [(d["where"], d["reason"], d["raw"]) for d in dead] == [
        (2, "invalid_json", "{not json"),
        (3, "missing_field", '{"user_id": "u2", "type": "view"}'),
        (5, "not_object", '["a list"]'),
    ]
    assert {d["source"] for d in dead} == {"produce:mixed.jsonl"}


async def _collector(bootstrap: str, topics: ProduceTopics, **settings: Any) -> TestClient[Any, Any]:
    await ensure_topics(bootstrap, [topics.events, topics.dead_letters], 4)
    app = create_collector_app(KafkaPublisher(new_producer(bootstrap)),
                               CollectorSettings(topics=topics, **settings))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_collector_accepts_valid_and_dead_letters_invalid(kafka_bootstrap: str) -> None:
    topics = ProduceTopics(events=unique_topic("ev"), dead_letters=unique_topic("dl"))
    client = await _collector(kafka_bootstrap, topics)
    try:
        array = [
            {"user_id": "a", "ts": 1, "type": "view", "product_id": "p1"},
            {"user_id": "b", "ts": "2", "type": "view"},
            {"user_id": "c", "ts": 3, "type": "cart"},
            "not an object",
        ]
        resp = await client.post("/events", data=orjson.dumps(array),
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 202
        assert await resp.json() == {"accepted": 2, "rejected": 2, "errors": [
            {"index": 1, "reason": "wrong_type", "detail": "ts must be an integer, not string"},
            {"index": 3, "reason": "not_object", "detail": "expected a JSON object, got string"},
        ]}

        ndjson = b'{"user_id": 42, "ts": 5, "type": "purchase"}\n\n{"ts": 6, "type": "view"}\n'
        resp = await client.post("/events", data=ndjson,
                                 headers={"Content-Type": "application/x-ndjson"})
        assert resp.status == 202
        body = await resp.json()
        assert (body["accepted"], body["rejected"]) == (1, 1)
        assert body["errors"][0]["index"] == 2
        assert body["errors"][0]["reason"] == "missing_field"

        resp = await client.post("/events", data=b"[1, 2]")
        assert resp.status == 400
        assert [e["reason"] for e in (await resp.json())["errors"]] == ["not_object"] * 2

        metrics = await (await client.get("/metrics")).text()
        assert 'scenetrigger_collector_events_total{reason="",result="accepted"} 3.0' in metrics
        assert ('scenetrigger_collector_events_total{reason="not_object",result="rejected"} 3.0'
                in metrics)
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()

    events = record_events(await read_topic(kafka_bootstrap, topics.events))
    assert sorted((str(f["user_id"]), f["ts"]) for _, f in events) == [
        ("42", 5), ("a", 1), ("c", 3)]
    for partition, fields in events:
        assert partition == _expected_partition(str(fields["user_id"]).encode(), 4)
    dead = await read_topic(kafka_bootstrap, topics.dead_letters)
    reasons = Counter(orjson.loads(r.value)["reason"] for r in dead)
    assert reasons == {"wrong_type": 1, "not_object": 3, "missing_field": 1}
    assert {orjson.loads(r.value)["source"] for r in dead} == {"collector"}


async def test_collector_limits_and_token(kafka_bootstrap: str) -> None:
    topics = ProduceTopics(events=unique_topic("ev"), dead_letters=unique_topic("dl"))
    client = await _collector(kafka_bootstrap, topics, max_body_bytes=200, max_events=2,
                              token="s3cret")
    try:
        one = b'{"user_id": "a", "ts": 1, "type": "view"}'
        resp = await client.post("/events", data=one)
        assert resp.status == 401
        auth = {"Authorization": "Bearer s3cret"}
        resp = await client.post("/events", data=one + b"\n" + b" " * 300, headers=auth)
        assert resp.status == 413
        resp = await client.post("/events", data=b"\n".join([one] * 3), headers=auth)
        assert resp.status == 413
        resp = await client.post("/events", data=b"   ", headers=auth)
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["reason"] == "empty"
        resp = await client.post("/events", data=one, headers=auth)
        assert resp.status == 202
    finally:
        await client.close()
    assert len(await read_topic(kafka_bootstrap, topics.events)) == 1
