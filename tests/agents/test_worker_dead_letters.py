"""Malformed messages on the events topic go to the dead-letter topic with a
reason and the original bytes; the stream goes on."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from agents.record_batching import encode_batch
from tests.agents.worker_support import (
    all_committed,
    read_topic,
    send_raw,
    start_worker,
    unique,
    wait_for,
)

CONFIG = """
scenes:
  arrive:
    kind: arrival
    when: {type: cart}
engine: {max_future_event_clock: 1h}
"""

BAD: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"17", "not_object"),
    (b'{"user_id": "u", "type": "view"}', "missing_field"),
    (b'{"user_id": true, "ts": 1, "type": "view"}', "wrong_type"),
    (b'{"user_id": "u", "ts": 1.5, "type": "view"}', "wrong_type"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b"", "invalid_json"),
    # Issue 19: year 9999 fired, then held its cooldown till then (bounded against
    # the wall clock; under --clock event as configured above).
    (b'{"user_id": "first", "ts": 253402300799000, "type": "cart"}', "future_ts"),
]


BAD_IN_BATCH = b'{"user_id":"first","type":"cart"}'


def _cart(user: str, ts: int) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "ts": ts, "type": "cart"})


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_malformed_messages_go_to_dead_letters(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = tmp_path / "scenes.yaml"
    config.write_text(CONFIG)
    prefix = unique("t-dlq")
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "memory"], config)
    try:
        wait_for("4 partitions assigned",
                 lambda: worker.metric("scenetrigger_partitions") == 4, 120, [worker])
        # All on one key, so one partition sees good, bad, good in this order.
        messages = [_cart("first", 1000)]
        messages += [(b"first", raw) for raw, _ in BAD]
        messages.append(_cart("first", 2000))
        # A batch record with a bad event inside: only that one is dead-lettered.
        messages.append((b"first", encode_batch([_cart("first", 3000)[1], BAD_IN_BATCH,
                                                 _cart("first", 4000)[1]])))
        send_raw(kafka_bootstrap, f"{prefix}.events", messages)
        wait_for("every message taken",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted") == 4
                 and worker.metric("scenetrigger_events_total",
                                   result="rejected") == len(BAD) + 1,
                 60, [worker])
        # counted is not yet sent: the commit follows a settle's sends
        wait_for("all offsets committed", lambda: all_committed(
            kafka_bootstrap, prefix, f"{prefix}.events"), 60, [worker])
        dead = read_topic(kafka_bootstrap, f"{prefix}.dead-letters")
        triggers = read_topic(kafka_bootstrap, f"{prefix}.triggers")
        per_reason = {reason: worker.metric("scenetrigger_events_total", result="rejected",
                                            reason=reason) for _, reason in BAD}
    finally:
        worker.stop()
    in_batch = dead.pop()
    assert (in_batch["reason"], in_batch["index"], in_batch["raw"].encode()) == (
        "missing_field", 1, BAD_IN_BATCH)
    assert in_batch["where"] == dead[-1]["where"].rsplit(":", 1)[0] + ":" + str(
        int(dead[-1]["where"].rsplit(":", 1)[1]) + 2)  # the record after the last good one
    assert [d["reason"] for d in dead] == [reason for _, reason in BAD]
    assert all("index" not in d for d in dead)  # one-event records
    for record, (raw, _) in zip(dead, BAD, strict=True):
        assert record["detail"]
        assert record["source"] == "worker"
        assert record["where"].startswith(f"{prefix}.events:")
        if "raw_b64" in record:
            assert base64.b64decode(record["raw_b64"]) == raw
        else:
            assert record["raw"].encode() == raw
    assert per_reason["wrong_type"] == 2
    assert per_reason["invalid_json"] == 2
    # The good events around the bad ones were both taken.
    assert [(t["user_id"], t["ts"]) for t in triggers] == [
        ("first", 1000), ("first", 2000), ("first", 3000), ("first", 4000)]
