"""The console in Kafka mode reads the compacted ``PREFIX.audiences`` topic:
its "Return per ad channel" rows (``GET /api/channels``) count the members
the records name, and an erasure's tombstone takes its key's member out
(docs/ads.md, "Return per channel"; docs/console.md)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.agents.worker_support import start_cli, unique, wait_for
from tests.services import free_port
from triggers.audiences.record import AudienceChange, change_key, encode_change

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
T0 = 1_780_000_000_000
AUDIENCE = "viewed_no_buy"


async def _send(bootstrap: str, records: list[tuple[str, bytes, bytes | None]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _channels(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/api/channels", timeout=5) as resp:
        rows: list[dict[str, Any]] = json.loads(resp.read())["rows"]
    return rows


def test_the_kafka_console_counts_the_audience_topic_members(kafka_bootstrap: str,
                                                              tmp_path: Path) -> None:
    prefix = unique("t-conaud")
    config = tmp_path / "ads.yaml"
    config.write_text(yaml.safe_dump({
        "scenes": {"cart_abandonment": {"kind": "absence", "start": {"type": "cart"},
                                        "after": "30m"}},
        "audiences": {AUDIENCE: {"journey": True}},
        "ads": {"holdout": 0.0, "sinks": {"hook": {
            "type": "webhook", "url": "http://127.0.0.1:9/a", "secret_env": "UNUSED_SECRET",
            "audiences": {AUDIENCE: AUDIENCE}}}}}))
    changes = [AudienceChange.at(AUDIENCE, user, "enter", T0 + n, "journey")
               for n, user in enumerate(("ann", "bob", "cy"))]
    audiences = f"{prefix}.audiences"
    asyncio.run(_send(kafka_bootstrap, [
        *[(audiences, c.key, encode_change(c)) for c in changes],
        (audiences, change_key(AUDIENCE, "cy"), None),  # cy was erased: her key deleted
        (f"{prefix}.events", b"ann", orjson.dumps(
            {"user_id": "ann", "ts": T0 + 60_000, "type": "purchase"}))]))

    port = free_port()
    console = start_cli(tmp_path / "console.log", "console", [
        "console", "--broker", kafka_bootstrap, "--topic-prefix", prefix, "--config",
        str(config), "--port", str(port)], port)
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []

    def counted() -> bool:
        try:
            rows[:] = _channels(base)
        except OSError:
            return False
        return bool(rows) and rows[0]["reach"] == 2 and rows[0]["conversions"] == 1

    try:
        wait_for("the console to count the audience topic's members", counted, 90, [console])
    finally:
        console.stop()
    (row,) = rows
    assert (row["channel"], row["audience"], row["holdout"]) == ("hook", AUDIENCE, 0)
