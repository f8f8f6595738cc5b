"""``date`` on real Kafka: a worker with ``--clock event`` fires the same
birthday and renewal triggers as replay (the attribute arrives as an
``attributes`` event; a fired year arms the next), in both record forms."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

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
  birthday:
    kind: date
    attribute: birthday
    offset_days: -3
    at: "09:30"
  renewal:
    kind: date
    attribute: renews_on
    offset_days: -7
    every: none
    timezone: Asia/Shanghai
"""
SCENES = {"birthday", "renewal"}


def ms(y: int, m: int, d: int, h: int = 0, mi: int = 0, tz: str = "UTC") -> int:
    return int(datetime(y, m, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def _events() -> list[dict[str, object]]:
    events: list[dict[str, object]] = [
        {"user_id": "ann", "ts": ms(2024, 1, 10), "type": "attributes",
         "birthday": "1990-06-17", "tz": "Europe/Berlin"},
        {"user_id": "bob", "ts": ms(2024, 1, 10, 0, 1), "type": "attributes",
         "renews_on": "2024-03-01"},
        {"user_id": "cid", "ts": ms(2024, 1, 10, 0, 2), "type": "attributes",
         "birthday": "02-29", "tz": "America/New_York"},
        {"user_id": "dan", "ts": ms(2024, 1, 10, 0, 3), "type": "attributes",
         "birthday": "1985-05-05"},
        {"user_id": "dan", "ts": ms(2024, 2, 1), "type": "attributes", "birthday": None},
    ]
    # Each user is seen again in mid-2025: their partition's clock passes the
    # 2024 and 2025 dates (each partition's engine has its own event clock).
    events += [{"user_id": user, "ts": ms(2025, 7, 1) + i, "type": "view", "product_id": "p1"}
               for i, user in enumerate(["ann", "bob", "cid", "dan"])]
    return events


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize("form", RECORD_FORMS)
def test_worker_fires_date_triggers_like_replay(kafka_bootstrap: str, tmp_path: Path,
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
        ("birthday", "ann", None, ms(2024, 6, 14, 9, 30, "Europe/Berlin")): 1,
        ("birthday", "ann", None, ms(2025, 6, 14, 9, 30, "Europe/Berlin")): 1,
        ("birthday", "cid", None, ms(2024, 2, 26, 9, 30, "America/New_York")): 1,
        ("birthday", "cid", None, ms(2025, 2, 25, 9, 30, "America/New_York")): 1,
        ("renewal", "bob", None, ms(2024, 2, 23, 9, 0, "Asia/Shanghai")): 1,
    }

    prefix = unique("t-date")
    produce_file(kafka_bootstrap, sample, f"{prefix}.events", form=form)
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "rocksdb"], config)
    try:
        wait_for("all events taken",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted")
                 >= len(events), 150, [worker])
        wait_for("all offsets committed", lambda: all_committed(
            kafka_bootstrap, prefix, f"{prefix}.events"), 60, [worker])
        wait_for("every date trigger written", lambda: trigger_keys(
            read_topic(kafka_bootstrap, f"{prefix}.triggers"), SCENES) == expected, 60,
            [worker])
        records = read_topic(kafka_bootstrap, f"{prefix}.triggers")
    finally:
        worker.stop()
    assert trigger_keys(records, SCENES) == expected
