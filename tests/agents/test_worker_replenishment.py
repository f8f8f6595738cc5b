"""``replenishment`` on real Kafka: a worker with ``--clock event`` fires the
same overdue-purchase triggers as replay (and none for a user who bought on
time or has too short a history), in both record forms."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.agents.worker_support import (
    RECORD_FORMS,
    all_committed,
    produce_file,
    read_topic,
    replay_keys,
    start_worker,
    trigger_keys,
    unique,
    wait_for,
)

CONFIG = """
scenes:
  refill:
    kind: replenishment
    margin: 2d
  refill_coffee:
    kind: replenishment
    category: coffee
    margin: 1d
    max_spread: 0.5
"""
SCENES = {"refill", "refill_coffee"}
DAY = 86_400_000
BASE = 1_700_000_000_000


def _events() -> list[dict[str, object]]:
    buys = {  # purchase days per user; every user is seen again on day 40
        "late": [0, 10, 20],  # due on day 32: fires
        "kept": [0, 10, 20, 31],  # bought in time: re-armed to day 43, pending
        "new": [0, 10],  # one interval: not sure enough, never armed
        "coffee": [0, 7, 14],  # coffee due day 22, overall due day 23
    }
    events: list[dict[str, object]] = []
    for user, days in buys.items():
        for day in days:
            events.append({"user_id": user, "ts": BASE + day * DAY, "type": "purchase",
                           "product_id": "p1", "category": "coffee", "price": 9.5})
    for user in buys:
        events.append({"user_id": user, "ts": BASE + 40 * DAY, "type": "view",
                       "product_id": "p2"})
    events.sort(key=lambda e: e["ts"])  # type: ignore[arg-type,return-value]
    return events


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize("form", RECORD_FORMS)
def test_worker_fires_replenishment_like_replay(kafka_bootstrap: str, tmp_path: Path,
                                                form: str) -> None:
    config = tmp_path / "scenes.yaml"
    config.write_text(CONFIG)
    sample = tmp_path / "events.jsonl"
    events = _events()
    sample.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    expected = trigger_keys(
        [{"scene": s, "user_id": u, "key": k, "ts": t}
         for s, u, k, t in replay_keys(sample, config, tmp_path)], SCENES)
    assert expected == {
        ("refill", "late", None, BASE + 32 * DAY): 1,
        ("refill", "coffee", None, BASE + 23 * DAY): 1,
        ("refill_coffee", "late", None, BASE + 31 * DAY): 1,
        ("refill_coffee", "coffee", None, BASE + 22 * DAY): 1,
    }

    prefix = unique("t-refill")
    produce_file(kafka_bootstrap, sample, f"{prefix}.events", form=form)
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "rocksdb"], config)
    try:
        wait_for("all events taken",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted")
                 >= len(events), 150, [worker])
        wait_for("all offsets committed", lambda: all_committed(
            kafka_bootstrap, prefix, f"{prefix}.events"), 60, [worker])
        records = read_topic(kafka_bootstrap, f"{prefix}.triggers")
    finally:
        worker.stop()
    assert trigger_keys(records, SCENES) == expected
