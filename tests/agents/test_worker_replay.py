"""The rees46 sample on a 4-partition topic, one worker with ``--clock event``:
repeat and arrival triggers equal replay's, as multisets; and ``scenetrigger
report`` over the worker's records (``scenetrigger export`` of its triggers
and events topics) gives those scenes the funnel and uplift of a report over
the replay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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
from tests.paths import REES46_SAMPLE

SAMPLE = REES46_SAMPLE  # tests.paths: ../shared beside the repo, or $SCENETRIGGER_SHARED

# The shipped repeat scene, an arrival scene that fires on rees46 (it has no
# /promo pages) and the shipped absence scene (not compared: 4 clocks).
CONFIG = """
scenes:
  repeat_view_no_purchase:
    kind: repeat
    when: {type: view}
    per: product_id
    count: 3
    within: 30m
    unless: {type: purchase}
    cooldown: 24h
  cart_arrival:
    kind: arrival
    when: {type: cart}
    per: product_id
    cooldown: 1h
  cart_abandonment:
    kind: absence
    start: {type: cart}
    cancel: {type: purchase}
    after: 30m
"""
COMPARED = {"repeat_view_no_purchase", "cart_arrival"}
EVENTS_IN_SAMPLE = 8721


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.parametrize("form", RECORD_FORMS)
def test_one_worker_equals_replay_on_rees46(kafka_bootstrap: str, tmp_path: Path,
                                            form: str) -> None:
    config = tmp_path / "scenes.yaml"
    config.write_text(CONFIG)
    expected = replay_keys(SAMPLE, config, tmp_path)
    expected_counts = trigger_keys(
        [{"scene": s, "user_id": u, "key": k, "ts": t} for s, u, k, t in expected], COMPARED)
    assert sum(expected_counts.values()) > 100  # the comparison has something to compare
    assert {k[0] for k in expected_counts} == COMPARED

    prefix = unique("t-replay")
    produce_file(kafka_bootstrap, SAMPLE, f"{prefix}.events", form=form)
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "rocksdb"], config)
    try:
        wait_for("all events taken",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted")
                 >= EVENTS_IN_SAMPLE, 150, [worker])
        assert worker.metric("scenetrigger_events_total", result="rejected") == 0
        # Taken is not yet sent: a settle's triggers go out (and are acked)
        # before its offsets are committed, so the commit says all are out.
        wait_for("all offsets committed", lambda: all_committed(
            kafka_bootstrap, prefix, f"{prefix}.events"), 60, [worker])
        records = read_topic(kafka_bootstrap, f"{prefix}.triggers")
    finally:
        worker.stop()
    got = trigger_keys(records, COMPARED)
    assert got == expected_counts
    assert all(r["trigger_id"] and r["fired_at_ms"] > 0 for r in records)
    assert len({r["trigger_id"] for r in records}) == len(records)

    # report over the worker's records == report over the replay, per compared scene
    exported = {}
    for name in ("triggers", "events"):
        exported[name] = tmp_path / f"{name}.jsonl"
        _cli(["export", f"{prefix}.{name}", "--broker", kafka_bootstrap, "--sort-by-ts",
              "--out", str(exported[name])])
    assert len(exported["events"].read_bytes().splitlines()) == EVENTS_IN_SAMPLE
    replayed = tmp_path / "replayed.jsonl"
    _cli(["replay", str(SAMPLE), "--config", str(config), "--out", str(replayed),
          "--no-progress"])
    from_worker = _scene_rows(exported["triggers"], exported["events"], config)
    from_replay = _scene_rows(replayed, SAMPLE, config)
    assert from_worker == from_replay
    assert sum(row["treated"] for row in from_replay.values()) > 100
    assert sum(row["control"] for row in from_replay.values()) > 10


def _cli(args: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _scene_rows(triggers: Path, events: Path, config: Path) -> dict[str, Any]:
    report = orjson.loads(_cli(["report", str(triggers), str(events), "--config", str(config),
                                "--control-share", "0.2", "--json", "-"]))
    return {row["name"]: row for row in report["rows"]
            if row["kind"] == "scene" and row["name"] in COMPARED}
