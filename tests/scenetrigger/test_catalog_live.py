"""The catalog stream on a real Kafka (and serve on a real Redis):
``catalog load --broker`` twice sends only the changed products to a
compacted topic; ``produce --catalog`` sends all; ``POST /catalog`` needs its
own token (403 unset, 401 wrong, nothing sent) and dead-letters bad records
with their reasons and a metric."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from redis.asyncio import Redis

from agents.kafka_clients import new_producer
from channels.feedback.events import JsonlSink
from config.loader import load_config_text
from config.tokens import CATALOG_TOKEN_ENV
from scenetrigger.cli.main import main
from scenetrigger.cli.run.serve import ServeParts, build_app, catalog_publisher
from tests.agents.kafka_read import read_topic
from tests.channels.receivers import serve_app
from triggers.catalog import decode_catalog_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def record(pid: str, price: int, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "product_id": pid, "price_cents": price, **extra}


def write(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        out = {}
        for response in await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]):
            for res in response.to_object()["resources"]:
                for entry in res["config_entries"]:
                    out[entry["config_names"]] = entry["config_value"]
        return out
    finally:
        await admin.close()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(list(argv)) == 0
    result: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    return result


def test_catalog_load_twice_sends_only_the_changed_products(
        kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"cat{uuid.uuid4().hex[:8]}"
    first = [record("a", 1000, variants={"s": {"stock": 0}}), record("b", 2000),
             record("c", 3000, category="shoes")]
    common = ["--broker", kafka_bootstrap, "--topic-prefix", prefix, "--json"]
    one = run_cli(capsys, "catalog", "load", str(write(tmp_path / "v1.jsonl", first)), *common)
    assert (one["sent"], one["sent_ids"], one["rejected"]) == (3, ["a", "b", "c"], 0)

    second = [record("a", 1000, variants={"s": {"stock": 4}}),  # back in stock
              record("b", 2000),  # unchanged
              record("c", 2500, category="shoes"),  # price drop
              record("d", 900, is_new=True),  # new
              record("e", -1), record("f", 5, colour="red"), record("g" * 300, 5)]
    two = run_cli(capsys, "catalog", "load", str(write(tmp_path / "v2.jsonl", second)), *common)
    assert (two["sent"], two["sent_ids"], two["unchanged"]) == (3, ["a", "c", "d"], 1)
    assert two["reasons"] == {"negative_price": 1, "unknown_field": 1, "too_long": 1}
    assert [(c["kind"], c["product_id"]) for c in two["changes"]] == [
        ("back_in_stock", "a"), ("price_drop", "c"), ("new_arrival", "d")]

    records = asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.catalog"))
    assert sorted(r.key.decode() for r in records) == ["a", "a", "b", "c", "c", "d"]
    latest = {r.key.decode(): decode_catalog_record(r.value) for r in records}
    assert latest["c"].price_cents == 2500 and latest["a"].variant_map()["s"].stock == 4
    assert asyncio.run(topic_config(kafka_bootstrap, f"{prefix}.catalog"))[
        "cleanup.policy"] == "compact"

    dead = [orjson.loads(r.value)
            for r in asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.dead-letters"))]
    # Unkeyed dead letters spread over partitions: compare in line order.
    assert sorted((d["where"], d["reason"], d["source"]) for d in dead) == [
        (5, "negative_price", "catalog:v2.jsonl"), (6, "unknown_field", "catalog:v2.jsonl"),
        (7, "too_long", "catalog:v2.jsonl")]
    assert [orjson.loads(d["raw"]) for d in dead if d["where"] == 6] == [second[5]]

    # The same file again: nothing changed, nothing sent.
    three = run_cli(capsys, "catalog", "load", str(tmp_path / "v2.jsonl"), *common)
    assert (three["sent"], three["unchanged"]) == (0, 4)


def test_produce_catalog_sends_every_record(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"catp{uuid.uuid4().hex[:8]}"
    rows = [record("a", 1), record("a", 1), record("b", 2)]
    summary = tmp_path / "summary.json"
    assert main(["produce", str(write(tmp_path / "c.jsonl", rows)), "--catalog", "--broker",
                 kafka_bootstrap, "--topic-prefix", prefix, "--summary-json",
                 str(summary)]) == 0
    assert orjson.loads(summary.read_bytes())["sent"] == 3  # no diff: every record
    records = asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.catalog"))
    assert [r.key for r in records if r.key == b"a"] == [b"a", b"a"]


async def test_post_catalog_needs_its_own_token(kafka_bootstrap: str, redis_url: str) -> None:
    prefix = f"cats{uuid.uuid4().hex[:8]}"
    token = uuid.uuid4().hex
    config = load_config_text("scenes:\n  s: {kind: arrival, when: {page: {prefix: /x}}}\n"
                              "engine: {max_id_chars: 20}\n")
    client = Redis.from_url(redis_url)
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    publish = await catalog_publisher(kafka_bootstrap, producer, prefix, None)
    good = record("p1", 1500, variants={"42": {"stock": 2, "available": True}})
    bad = [record("p2", -3), record("p3", 1, prize=2), record("p" * 21, 1)]
    try:
        async with aiohttp.ClientSession() as http:
            closed = build_app(ServeParts(config, client, JsonlSink(io.StringIO()),
                                          env={}, catalog=publish))
            async with serve_app(closed) as base:
                for headers in ({}, {"Authorization": f"Bearer {token}"}):
                    async with http.post(f"{base}/catalog", json=good, headers=headers) as resp:
                        assert resp.status == 403
            app = build_app(ServeParts(config, client, JsonlSink(io.StringIO()),
                                       env={CATALOG_TOKEN_ENV: token}, catalog=publish))
            async with serve_app(app) as base:
                for headers in ({}, {"Authorization": "Bearer wrong"},
                                {"Authorization": token}):
                    async with http.post(f"{base}/catalog", json=good, headers=headers) as resp:
                        assert resp.status == 401
                auth = {"Authorization": f"Bearer {token}"}
                async with http.post(f"{base}/catalog", json=good, headers=auth) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["sent"] == 1
                async with http.post(f"{base}/catalog", json=[*bad, good],
                                     headers=auth) as resp:
                    assert resp.status == 422
                    body = await resp.json()
                    assert (body["sent"], body["rejected"]) == (1, 3)
                    assert body["reasons"] == {"negative_price": 1, "too_long": 1,
                                               "unknown_field": 1}
                async with http.get(f"{base}/metrics") as resp:
                    metrics = await resp.text()
                assert 'scenetrigger_catalog_rejected_total{reason="negative_price"} 1.0' \
                    in metrics
                assert "scenetrigger_catalog_records_total 2.0" in metrics
    finally:
        await producer.stop()
        await client.aclose()
    records = await read_topic(kafka_bootstrap, f"{prefix}.catalog")
    # Two accepted posts of the same record; nothing from the refused ones.
    assert [(r.key, decode_catalog_record(r.value).price_cents) for r in records] == [
        (b"p1", 1500), (b"p1", 1500)]
    dead = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap,
                                                            f"{prefix}.dead-letters")]
    assert sorted((d["where"], d["reason"], d["source"]) for d in dead) == [
        (0, "negative_price", "serve:/catalog"), (1, "unknown_field", "serve:/catalog"),
        (2, "too_long", "serve:/catalog")]
