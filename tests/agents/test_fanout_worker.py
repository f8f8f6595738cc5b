"""The catalog scenes on real Kafka: ``scenetrigger fanout`` (the catalog
side) and ``scenetrigger worker --clock event`` (the user side) on the
catalog-plus-clickstream sample give replay's triggers (immediate scenes
exactly; digests as the products they name, each once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agents.fanout_support import (
    DIGESTS,
    clock_events,
    comparable,
    pipeline_counts,
    replayed,
    send_history,
    start_fanout,
    write_inputs,
)
from tests.agents.worker_support import (
    all_committed,
    produce_file,
    read_topic,
    send_raw,
    start_worker,
    unique,
    wait_for,
)
from tests.fanout_sample import SCENES


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_worker_and_fanout_equal_replay(kafka_bootstrap: str, tmp_path: Path) -> None:
    events, catalog, config = write_inputs(tmp_path)
    expected = comparable(replayed(tmp_path, events, catalog, config))
    assert {k[0] for k in expected} == set(SCENES)  # every scene has something to compare
    clicks, interest, fanned = pipeline_counts(events, catalog, config)
    assert fanned > 100

    prefix = unique("t-fanout")
    produce_file(kafka_bootstrap, events, f"{prefix}.events")
    fan = start_fanout(tmp_path, kafka_bootstrap, prefix, config)
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "memory"], config)
    both = [fan, worker]
    try:
        wait_for("the interest relayed", lambda: fan.metric(
            "scenetrigger_interest_events_total") >= interest, 300, both)
        wait_for("the interest taken", lambda: all_committed(
            kafka_bootstrap, f"{prefix}-fanout", f"{prefix}.by-product"), 300, both)
        send_history(kafka_bootstrap, f"{prefix}.catalog", catalog)
        wait_for("the fan-out sent", lambda: fan.metric(
            "scenetrigger_fanout_events_total") >= fanned, 300, both)
        wait_for("the fan-out taken", lambda: worker.metric(
            "scenetrigger_events_total", result="accepted") >= clicks + fanned, 300, both)
        send_raw(kafka_bootstrap, f"{prefix}.events", clock_events())
        wait_for("every event taken", lambda: worker.metric(
            "scenetrigger_events_total", result="accepted") >= clicks + fanned + 4, 300, both)
        wait_for("all offsets committed", lambda: all_committed(
            kafka_bootstrap, prefix, f"{prefix}.events"), 300, both)
        records = read_topic(kafka_bootstrap, f"{prefix}.triggers")
        assert fan.metric("scenetrigger_fanout_events_total") == fanned
    finally:
        worker.stop()
        fan.stop()
    unique_records = {r["trigger_id"]: r for r in records}.values()
    got = comparable([(r["scene"], r["user_id"], r["key"], r["ts"]) for r in unique_records])
    assert got == expected
    assert any(k[0] in DIGESTS for k in got)
