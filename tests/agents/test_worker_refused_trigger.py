"""Kafka refuses a trigger (the triggers topic takes no record that large):
the worker stops with exit code 75 and commits nothing of that batch; once
the topic is fixed, a restarted worker redoes the batch and the trigger is
sent, once (real Kafka)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.app import EXIT_TRIGGER_SEND_FAILED
from tests.agents.worker_support import (
    RECORD_FORMS,
    read_topic,
    send_events,
    start_worker,
    unique,
    wait_for,
)

CONFIG = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 2, within: 1h}
"""


def view(user: str, ts: int, product: str) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "ts": ts, "type": "view",
                                        "product_id": product})


async def _admin(bootstrap: str, topic: str, max_bytes: int, create: bool) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"max.message.bytes": str(max_bytes)}
        if create:
            await admin.create_topics([NewTopic(topic, 4, 1, topic_configs=configs)])
        else:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                      configs=configs)])
    finally:
        await admin.close()


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("form", RECORD_FORMS)
def test_a_refused_trigger_stops_the_worker_and_is_redone_after_a_restart(
        kafka_bootstrap: str, tmp_path: Path, form: str) -> None:
    prefix = unique("t-refused")
    triggers = f"{prefix}.triggers"
    asyncio.run(_admin(kafka_bootstrap, triggers, 64, create=True))  # a trigger is ~200 B
    config = tmp_path / "scenes.yaml"
    config.write_text(CONFIG)
    flags = ["--store", "memory", "--commit-interval", "200ms", "--clock", "event"]
    now = int(time.time() * 1000)

    first = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix, flags, config)
    try:
        wait_for("4 partitions", lambda: first.metric("scenetrigger_partitions") == 4, 120,
                 [first])
        send_events(kafka_bootstrap, f"{prefix}.events",
                    [view("u", now, "p1"), view("u", now + 1000, "p1")], form)
        code = first.process.wait(timeout=90)
    finally:
        first.stop()
    assert code == EXIT_TRIGGER_SEND_FAILED, first.log_tail()
    assert "trigger send failed" in first.log_tail(400)
    assert read_topic(kafka_bootstrap, triggers) == []

    asyncio.run(_admin(kafka_bootstrap, triggers, 1_048_588, create=False))
    second = start_worker(tmp_path, "b", kafka_bootstrap, prefix, prefix, flags, config)
    try:
        wait_for("the trigger sent", lambda: second.metric(
            "scenetrigger_triggers_total", scene="rv") >= 1, 120, [second])
        records = read_topic(kafka_bootstrap, triggers)
    finally:
        second.stop()
    assert [(r["scene"], r["user_id"], r["key"], r["ts"]) for r in records] == [
        ("rv", "u", "p1", now + 1000)]
