"""A worker restarted with a scene's `per` changed: the state recovered from
the changelog was written under the old shape and is reset, so a repeat
count does not carry over to the new key (real Kafka, two worker runs)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.agents.worker_support import (
    RECORD_FORMS,
    all_committed,
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
PER_CATEGORY = CONFIG.replace("per: product_id", "per: category")


def view(user: str, ts: int, product: str, category: str) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "ts": ts, "type": "view",
                                        "product_id": product, "category": category})


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("form", RECORD_FORMS)
def test_restart_with_a_changed_per_does_not_carry_the_count_over(
        kafka_bootstrap: str, tmp_path: Path, form: str) -> None:
    prefix = unique("t-reshape")
    app_id = prefix
    events = f"{prefix}.events"
    flags = ["--store", "memory", "--commit-interval", "200ms", "--clock", "event"]
    config_a, config_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    config_a.write_text(CONFIG)
    config_b.write_text(PER_CATEGORY)
    now = int(time.time() * 1000)

    first = start_worker(tmp_path, "a", kafka_bootstrap, app_id, prefix, flags, config_a)
    try:
        wait_for("4 partitions", lambda: first.metric("scenetrigger_partitions") == 4, 120,
                 [first])
        # product "x" in category "x": the old key and the new one are the same string
        send_events(kafka_bootstrap, events, [view("u", now, "x", "x")], form)
        wait_for("the view committed", lambda: all_committed(kafka_bootstrap, app_id, events),
                 60, [first])
    finally:
        first.stop()
    assert first.process.returncode == 0, first.log_tail()

    second = start_worker(tmp_path, "b", kafka_bootstrap, app_id, prefix, flags, config_b)
    try:
        wait_for("4 partitions", lambda: second.metric("scenetrigger_partitions") == 4, 120,
                 [second])
        send_events(kafka_bootstrap, events, [
            view("u", now + 10, "y", "x"),  # 2 views of category x only with the old one
            view("w", now + 10, "p", "c"), view("w", now + 20, "q", "c")], form)  # fires: control
        wait_for("three events taken", lambda: second.metric(
            "scenetrigger_events_total", result="accepted") == 3, 60, [second])
        # a trigger is sent in the same step as its event is counted
        fired = second.metric("scenetrigger_triggers_total", scene="rv")
        log = second.log_tail(400)
    finally:
        second.stop()
    assert fired == 1
    records = read_topic(kafka_bootstrap, f"{prefix}.triggers")
    assert [(r["user_id"], r["key"]) for r in records] == [("w", "c")]
    assert "recovered state reshaped" in log
