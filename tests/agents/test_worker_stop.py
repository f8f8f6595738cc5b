"""A worker sent SIGTERM in the middle of draining a topic stops promptly
(no wait for messages its pending batches hold) with status 0, and loses
nothing: a second worker on the same group takes the rest from the committed
offsets and, deduplicated by trigger id, repeat and arrival triggers equal
replay's."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.agents.test_worker_failover import WORKER_ARGS
from tests.agents.test_worker_replay import COMPARED, CONFIG
from tests.agents.worker_support import (
    RECORD_FORMS,
    all_committed,
    assert_same_triggers,
    committed_offsets,
    produce_file,
    read_topic,
    replay_keys,
    start_worker,
    trigger_keys,
    unique,
    wait_for,
)

EVENTS = 40_000
# A hang bound, not a speed target: the bug waited 40 s and more. A loaded
# machine's worker can take seconds to flush and leave the group.
STOP_BOUND_S = 30.0


def write_events(path: Path, n: int, seed: int = 11) -> None:
    """JSONL events on few users and products so repeats and arrivals fire;
    ts rising 1 s per event (within repeat's 30 min window of a user's views)."""
    rnd = random.Random(seed)
    start = 1_700_000_000_000
    with path.open("wb") as out:
        for i in range(n):
            r = rnd.random()
            kind = "view" if r < 0.85 else "cart" if r < 0.96 else "purchase"
            ev = {"user_id": f"u{rnd.randrange(1_500)}", "ts": start + i * 1_000,
                  "type": kind, "product_id": f"p{rnd.randrange(60)}"}
            if kind == "purchase":
                ev["price"] = "9.99"
            out.write(orjson.dumps(ev) + b"\n")


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("form", RECORD_FORMS)
def test_sigterm_mid_drain_stops_promptly_and_loses_nothing(kafka_bootstrap: str,
                                                            tmp_path: Path, form: str) -> None:
    config = tmp_path / "scenes.yaml"
    config.write_text(CONFIG)
    events = tmp_path / "events.jsonl"
    write_events(events, EVENTS)
    expected = trigger_keys(
        [{"scene": s, "user_id": u, "key": k, "ts": t}
         for s, u, k, t in replay_keys(events, config, tmp_path)], COMPARED)
    assert sum(expected.values()) > 200 and {k[0] for k in expected} == COMPARED
    assert max(expected.values()) == 1  # dedupe by trigger id is exact

    prefix = unique("t-stop")
    produce_file(kafka_bootstrap, events, f"{prefix}.events", form=form)
    a = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix, WORKER_ARGS, config)
    b = None
    try:
        wait_for("a to be mid-drain",
                 lambda: a.metric("scenetrigger_events_total", result="accepted") >= 4_000,
                 120, [a], interval_s=0.05)
        a.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            status = a.process.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            tail = "\n".join(line[:300] for line in a.log_tail(30).splitlines())
            raise AssertionError(f"worker still running {STOP_BOUND_S:.0f}s after SIGTERM:\n"
                                 f"{tail}") from None
        stopped_s = time.monotonic() - sent
        assert status == 0, a.log_tail()
        committed, ends = committed_offsets(kafka_bootstrap, prefix, f"{prefix}.events")
        assert any(c < ends[p] for p, c in committed.items())  # a stopped mid-drain

        b = start_worker(tmp_path, "b", kafka_bootstrap, prefix, prefix, WORKER_ARGS, config)
        wait_for("b to take and commit the rest", lambda: all_committed(
            kafka_bootstrap, prefix, f"{prefix}.events"), 600, [b], interval_s=0.5)
        records = read_topic(kafka_bootstrap, f"{prefix}.triggers")
        redone = b.metric("scenetrigger_events_total", result="duplicate")
    finally:
        a.kill()
        if b is not None:
            b.stop()
    repeated = assert_same_triggers(records, expected, COMPARED)
    print(f"a stopped {stopped_s:.1f}s after SIGTERM; committed then {committed} of {ends}; "
          f"b skipped {redone:.0f} redelivered events; "
          f"{repeated} duplicate triggers")
