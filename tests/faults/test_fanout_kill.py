"""Exactly once as users see it: ``scenetrigger fanout`` killed with -9 in
the middle of a back-in-stock fan-out to 10,000 users, then restarted, redoes
the record (its offset was never committed) and sends again; every user gets
exactly one trigger once the records are deduplicated by their id, and the
user's side never fires twice for the same change (one trigger record each)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.agents.fanout_support import send_history, start_fanout
from tests.agents.worker_support import (
    all_committed,
    produce_file,
    read_topic,
    start_worker,
    unique,
    wait_for,
)
from triggers.fanout import event_id

USERS = 10_000
PER_RECORD = 5  # small records: the fan-out is 2,000 sends, the kill lands between two
BATCH = ["--batch-events", str(PER_RECORD)]
T0 = 1_700_000_000_000
CONFIG = """\
engine: {max_triggers_per_user: null}
catalog_interest: {max_users: 100000}
scenes:
  restock: {kind: back_in_stock}
"""


async def kill_mid_fanout(bootstrap: str, topic: str, send: Callable[[], None],
                          fan: Any) -> int:
    """Send the change (``send``), then kill the fan-out -9 as soon as its first
    record lands on ``topic``; how many records it had written by then. One
    consumer asks for the end offsets in a tight loop: a new consumer per look
    took longer than the whole fan-out on a loaded machine."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]

        async def end() -> int:
            return sum((await consumer.end_offsets(tps)).values())

        before = await end()
        await asyncio.to_thread(send)
        deadline = time.monotonic() + 120
        while (sent := await end() - before) == 0:
            assert time.monotonic() < deadline, fan.log_tail()
        fan.kill()
        return sent
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.timeout(720)
def test_kill_9_mid_fanout_each_user_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = tmp_path / "scenes.yaml"
    config.write_text(CONFIG)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(
        {"user_id": f"u{n}", "ts": T0 + n, "type": "notify_me", "product_id": "hot"}) + b"\n"
        for n in range(USERS)))
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(b"".join(orjson.dumps({"ts": T0 + USERS + n, "record": {
        "v": 1, "product_id": "hot", "price_cents": 1000, "variants": {"a": {"stock": stock}}}})
        + b"\n" for n, stock in enumerate((0, 50))))

    prefix = unique("t-fankill")
    topic = f"{prefix}.events"
    produce_file(kafka_bootstrap, events, topic)
    fan = start_fanout(tmp_path, kafka_bootstrap, prefix, config, "fan-1", BATCH)
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "memory"], config)
    try:
        wait_for("the interest relayed", lambda: fan.metric(
            "scenetrigger_interest_events_total") >= USERS, 240, [fan, worker])
        wait_for("the interest taken", lambda: all_committed(
            kafka_bootstrap, f"{prefix}-fanout", f"{prefix}.by-product"), 240, [fan, worker])
        sent = asyncio.run(kill_mid_fanout(kafka_bootstrap, topic, lambda: send_history(
            kafka_bootstrap, f"{prefix}.catalog", catalog), fan))
        assert 0 < sent < USERS // PER_RECORD, (
            f"the kill came after the whole fan-out ({sent} sent)")

        fan = start_fanout(tmp_path, kafka_bootstrap, prefix, config, "fan-2", BATCH)
        wait_for("the fan-out redone", lambda: all_committed(
            kafka_bootstrap, f"{prefix}-fanout", f"{prefix}.by-product"), 150, [fan, worker])
        wait_for("every user's change taken", lambda: worker.metric(
            "scenetrigger_triggers_total", scene="restock") >= USERS, 120, [fan, worker])
        wait_for("all offsets committed", lambda: all_committed(
            kafka_bootstrap, prefix, topic), 240, [fan, worker])
        triggers = read_topic(kafka_bootstrap, f"{prefix}.triggers")
        records: list[Any] = read_topic(kafka_bootstrap, topic)
        fanned = [e for record in records
                  for e in (record if isinstance(record, list) else [record])
                  if e.get("type") == "catalog_change"]
    finally:
        worker.stop()
        fan.stop()
    # The restarted process sent the change again: more events than users...
    assert len(fanned) > USERS
    # ... each with the id of the documented formula, one id per user.
    change = f"restock|back_in_stock|hot|a|{T0 + USERS + 1}"
    assert {e["event_id"] for e in fanned} == {event_id(change, f"u{n}") for n in range(USERS)}
    # Each user once, deduplicated by trigger id; the user's side took each change once.
    once = {t["trigger_id"]: t for t in triggers}.values()
    assert Counter(t["user_id"] for t in once) == Counter({f"u{n}": 1 for n in range(USERS)})
    assert len(triggers) == USERS
