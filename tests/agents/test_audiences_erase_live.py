"""The compacted ``PREFIX.audiences`` topic on real Kafka and Redis, written
by the two processes that write it: the worker (the audiences' conditions)
and ``scenetrigger journeys`` (a journey's ``audience: {add: ...}`` step).

1. ``audiences sync --broker ... --dry-run --json`` reads exactly the members
   those processes wrote (docs/ads.md, "Syncing to ad platforms").
2. ``scenetrigger erase USER --broker`` makes the worker delete every
   ``audience|USER`` key of the config (journey audiences too): a null value
   after the user's last record, so compaction keeps nothing of the user,
   while another user's records stay; the sync reads the tombstones
   (docs/ads.md, "Consent and erasure")."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from config.hash_keys import HASH_KEY_ENV
from tests.agents.worker_support import start_cli, start_worker, unique, wait_for
from tests.services import free_port
from tests.triggers.test_audiences_reference import AUDIENCES, SCENES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
REPO = Path(__file__).resolve().parents[2]
MINUTE = 60_000
NAMES = (*AUDIENCES, "retarget")


def config(prefix: str) -> dict[str, Any]:
    return {
        "scenes": SCENES,
        "audiences": {**AUDIENCES, "retarget": {"journey": True}},
        "strategies": {"journeys": {"retargeting": {
            "entry": {"scene": "cart_abandonment"},
            "steps": [{"audience": {"add": "retarget"}},
                      {"branch": {"within": "1h", "else": "exit",
                                  "when": [{"event": "purchased", "goto": "exit"}]}}]}}},
        "delivery": {"redis_prefix": f"{prefix}:"},
        "ads": {"sinks": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/audiences",
                                   "secret_env": "AUDIENCE_TEST_SECRET",
                                   "audiences": {name: name for name in NAMES}}}},
    }


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180, check=False)


def records(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None]]:
    from agents.export import read_topic

    try:
        found = asyncio.run(read_topic(bootstrap, topic, 10))
    except Exception:  # not created yet
        return []
    return [(r.key, r.value) for r in found]


def by_key(found: list[tuple[bytes, bytes | None]]) -> dict[bytes, list[Any]]:
    out: dict[bytes, list[Any]] = defaultdict(list)
    for key, value in found:
        out[key].append(None if value is None else orjson.loads(value))
    return out


def serving(host: Any) -> bool:
    try:
        return bool(host.metrics_text())
    except OSError:
        return False


def test_sync_reads_what_worker_and_journeys_wrote_and_erasure_deletes_every_key(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, "audiences-erase-test-key")  # erase's (a subprocess)
    monkeypatch.setenv("AUDIENCE_TEST_SECRET", "s3cret")
    prefix = unique("t-auder")
    cfg = tmp_path / "ads.yaml"
    cfg.write_text(yaml.safe_dump(config(prefix)))
    topic = f"{prefix}.audiences"
    erased, kept = f"ann-{prefix}", f"bob-{prefix}"
    contacts = tmp_path / "contacts.jsonl"
    contacts.write_bytes(b"".join(orjson.dumps(
        {"user_id": u, "email": f"{u}@example.com", "consent": {"ads": True}}) + b"\n"
        for u in (erased, kept)))
    base = int(time.time() * 1000) - 120 * MINUTE
    events = tmp_path / "events.jsonl"
    # ann leaves a cart (cart_abandonment fires at base+30m: viewed_not_bought,
    # and the journey adds her to retarget); bob buys at base+40m (recent_buyers),
    # which moves the one clock past ann's deadline.
    events.write_bytes(orjson.dumps({"user_id": erased, "ts": base, "type": "cart",
                                     "product_id": "p1"}) + b"\n"
                       + orjson.dumps({"user_id": kept, "ts": base + 40 * MINUTE,
                                       "type": "purchase", "product_id": "p2"}) + b"\n")

    # first: the events topic with one partition (one clock, as replay's)
    produced = cli("produce", str(events), "--broker", kafka_bootstrap, "--topic",
                   f"{prefix}.events", "--dead-letter-topic", f"{prefix}.rejects",
                   "--partitions", "1", "--no-progress")
    assert produced.returncode == 0, produced.stderr
    port = free_port()
    journeys = start_cli(tmp_path / "journeys.log", "journeys", [
        "journeys", "--config", str(cfg), "--broker", kafka_bootstrap, "--topic-prefix",
        prefix, "--redis-url", redis_url, "--redis-prefix", f"{prefix}:", "--metrics-port",
        str(port), "--tick-interval", "0.2"], port)
    worker = None
    try:
        wait_for("the journeys host serving", lambda: serving(journeys), 90, [journeys])
        worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                              ["--store", "memory", "--clock", "event", "--partitions", "1",
                               "--commit-interval", "200ms"], cfg)
        wanted = {f"{name}|{user}".encode() for name, user in (
            ("viewed_not_bought", erased), ("retarget", erased), ("recent_buyers", kept))}
        wait_for("the worker's and the journey's enters",
                 lambda: set(by_key(records(kafka_bootstrap, topic))) >= wanted, 150,
                 [worker, journeys])
        written = records(kafka_bootstrap, topic)
        assert set(by_key(written)) == wanted
        assert {r["op"] for _k, v in written if v for r in [orjson.loads(v)]} == {"enter"}
        reasons = {k: v[-1]["reason"] for k, v in by_key(written).items()}
        assert reasons[f"retarget|{erased}".encode()] == "journey"  # written by `journeys`

        # 1. the sync reads exactly those members off the topic
        sync = cli("audiences", "sync", "--config", str(cfg), "--broker", kafka_bootstrap,
                   "--topic-prefix", prefix, "--directory", str(contacts), "--dry-run",
                   "--json")
        assert sync.returncode == 0, sync.stderr
        summary = orjson.loads(sync.stdout)
        assert summary["records"] == len(written) == 3 and summary["bad_records"] == 0
        assert summary["outcomes"] == {"added": 3}
        assert {k: row["members"] for k, row in summary["sinks"].items()} == {
            "hook viewed_not_bought add": 1, "hook retarget add": 1, "hook recent_buyers add": 1}

        # 2. erasure: every audience key of the user is deleted
        gone = cli("erase", erased, "--config", str(cfg), "--redis-url", redis_url,
                   "--tags-prefix", f"{prefix}:", "--broker", kafka_bootstrap,
                   "--topic-prefix", prefix, "--json")
        assert gone.returncode == 0, gone.stderr
        mine = {f"{name}|{erased}".encode() for name in NAMES}
        wait_for("a tombstone for each of the user's keys", lambda: all(
            by_key(records(kafka_bootstrap, topic)).get(k, [0])[-1] is None for k in mine),
            120, [worker, journeys])
    finally:
        if worker is not None:
            worker.stop()
        journeys.stop()
    after = by_key(records(kafka_bootstrap, topic))
    for key in mine:  # a compacted-topic reader: the last word on each key is a null
        assert after[key][-1] is None, (key, after[key])
        assert all(v is None or v["op"] == "exit" for v in after[key][1:])
    bob = after[f"recent_buyers|{kept}".encode()]
    assert bob[0]["op"] == "enter" and bob[-1] is not None  # another user's records stay
    assert not [k for k in after if k.endswith(kept.encode()) and after[k][-1] is None]

    # every record reads back through the sync, tombstones as exits (reason erased)
    again = cli("audiences", "sync", "--config", str(cfg), "--broker", kafka_bootstrap,
                "--topic-prefix", prefix, "--directory", str(contacts), "--dry-run", "--json")
    assert again.returncode == 0, again.stderr
    summary = orjson.loads(again.stdout)
    total = sum(len(v) for v in after.values())
    assert summary["bad_records"] == 0 and summary["records"] == total
    # the erase moved the clock: both 20/30-minute windows ran out first (exits),
    # then ann's three keys were deleted; a tombstone after an exit finds nothing synced
    assert after[f"viewed_not_bought|{erased}".encode()][1]["reason"] == "expired"
    assert summary["outcomes"] == {"added": 3, "removed": 3, "not_synced": 2}
