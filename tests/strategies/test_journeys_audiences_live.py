"""``scenetrigger journeys`` on real Kafka and Redis writes a journey's
audience steps to the compacted ``PREFIX.audiences`` topic: the enter when a
trigger starts the journey, the exit when the user buys (docs/ads.md,
"Journey steps")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.agents.worker_support import start_cli, unique, wait_for
from tests.scenetrigger.test_catalog_live import topic_config
from tests.services import free_port
from triggers.audiences.record import AudienceChange, decode_change
from triggers.events import Trigger
from triggers.wire import encode_trigger

CONFIG: dict[str, Any] = {
    "scenes": {"cart_abandonment": {"kind": "absence", "start": {"type": "cart"},
                                    "after": "30m"}},
    "audiences": {"retarget": {"journey": True}},
    "strategies": {"journeys": {"retargeting": {
        "entry": {"scene": "cart_abandonment"},
        "steps": [
            {"audience": {"add": "retarget"}},
            {"branch": {"within": "1h", "when": [{"event": "purchased", "goto": "bought"}],
                        "else": "exit"}},
            {"id": "bought", "audience": {"remove": "retarget"}},
        ]}}},
}


async def _send(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _records(bootstrap: str, topic: str) -> list[tuple[bytes, AudienceChange]]:
    from agents.export import read_topic

    found = await read_topic(bootstrap, topic, 5)  # created by the host before it serves
    return [(r.key, decode_change(r.value)) for r in found]


def _serving(host: Any) -> bool:
    try:
        return bool(host.metrics_text())
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_journey_audience_steps_reach_the_audiences_topic(kafka_bootstrap: str, redis_url: str,
                                                          tmp_path: Path) -> None:
    config = tmp_path / "journeys.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    prefix = unique("t-jaud")
    topic = f"{prefix}.audiences"
    port = free_port()
    host = start_cli(tmp_path / "journeys.log", "journeys", [
        "journeys", "--config", str(config), "--broker", kafka_bootstrap, "--topic-prefix",
        prefix, "--redis-url", redis_url, "--redis-prefix", f"{prefix}:", "--metrics-port",
        str(port), "--tick-interval", "0.2"], port)
    try:
        wait_for("the journeys host serving", lambda: _serving(host), 60, [host])
        now = int(time.time() * 1000)
        trigger = Trigger("cart_abandonment", "u1", None, now)
        asyncio.run(_send(kafka_bootstrap, f"{prefix}.triggers", b"u1",
                          encode_trigger(trigger, now)))
        wait_for("the enter", lambda: len(asyncio.run(_records(kafka_bootstrap, topic))) >= 1,
                 90, [host])
        asyncio.run(_send(kafka_bootstrap, f"{prefix}.feedback", b"u1", orjson.dumps(
            {"user_id": "u1", "ts": now + 1000, "type": "purchase"})))
        wait_for("the exit", lambda: len(asyncio.run(_records(kafka_bootstrap, topic))) >= 2,
                 90, [host])
        records = asyncio.run(_records(kafka_bootstrap, topic))
        policy = asyncio.run(topic_config(kafka_bootstrap, topic))["cleanup.policy"]
    finally:
        host.stop()
    assert policy == "compact"
    assert records == [
        (b"retarget|u1", AudienceChange.at("retarget", "u1", "enter", now, "journey")),
        (b"retarget|u1", AudienceChange.at("retarget", "u1", "exit", now + 1000, "journey"))]
