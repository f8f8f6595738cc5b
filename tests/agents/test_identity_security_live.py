"""Identity through the real collector on real Kafka with a worker (issue 19):
a client holding only the collector's public token cannot merge, alias or
move any user's state or triggers (403, nothing stored, the victim's
triggers stay the victim's), and the loopA/loopB pair, sent by the backend
itself, ends in a bounded number of records: the worker stops forwarding."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.agents.worker_support import (
    WorkerProcess,
    all_committed,
    read_topic,
    send_raw,
    start_cli,
    start_worker,
    unique,
    wait_for,
)
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
PUBLIC = "public-collector-token"
BACKEND = "backend-identify-token"
CONFIG = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 2, within: 1h}
  abandon: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
"""


def post(port: int, events: list[dict[str, Any]], token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events", data=orjson.dumps(events), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def events_of(records: list[Any]) -> list[dict[str, Any]]:
    """The events of an events topic's records (a record may be a batch)."""
    return [e for r in records for e in (r if isinstance(r, list) else [r])]


def start(tmp_path: Path, kafka: str, prefix: str) -> tuple[WorkerProcess, WorkerProcess]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG)
    worker = start_worker(tmp_path, "w", kafka, prefix, prefix,
                          ["--store", "memory", "--commit-interval", "200ms", "--clock", "event"],
                          cfg)
    port = free_port()
    collector = start_cli(tmp_path / "collector.log", "collector",
                          ["collector", "--broker", kafka, "--port", str(port),
                           "--topic-prefix", prefix], port,
                          {"SCENETRIGGER_COLLECTOR_TOKEN": PUBLIC,
                           "SCENETRIGGER_IDENTIFY_TOKEN": BACKEND})
    wait_for("the collector", lambda: healthy(port), 60, [collector])
    wait_for("4 partitions", lambda: worker.metric("scenetrigger_partitions") == 4, 120, [worker])
    return worker, collector


def test_the_collector_token_cannot_move_a_users_state_or_triggers(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    victim, attacker, device = f"victim-{run}", f"attacker-{run}", f"device-{run}"
    prefix = unique("t-idsec")
    worker, collector = start(tmp_path, kafka_bootstrap, prefix)
    port = collector.metrics_port
    now = int(time.time() * 1000)
    try:
        # The victim logs in on a device (the backend's statement), then browses.
        login = {"user_id": device, "ts": now, "type": "identify", "known_id": victim}
        assert post(port, [login], BACKEND)[0] == 202
        events = f"{prefix}.events"
        # The victim is a known user once the login's merge has landed on its partition.
        wait_for("the login merged", lambda: all_committed(kafka_bootstrap, prefix, events),
                 60, [worker])
        assert post(port, [{"user_id": victim, "ts": now + 1, "type": "cart"},
                           {"user_id": victim, "ts": now + 2, "type": "view",
                            "product_id": "p"}], PUBLIC)[0] == 202
        # Every way a browser could try it: refused, nothing stored.
        takeover = {"user_id": victim, "ts": now + 3, "type": "identify", "known_id": attacker}
        forged = dict(takeover, identify_sig=hmac.new(
            PUBLIC.encode(), f"identify\n{victim}\n{attacker}\n{now + 3}".encode(),
            hashlib.sha256).hexdigest())  # signed with the only key a browser has
        tries: list[tuple[list[dict[str, Any]], int, str]] = [
            ([takeover], 403, "identify_unauthorized"),
            ([{"user_id": victim, "ts": now + 3, "type": "view", "product_id": "p"}, takeover],
             403, "identify_unauthorized"),
            ([forged], 403, "identify_unauthorized"),
            ([dict(takeover, type="merge_users")], 400, "reserved_type"),
            ([dict(takeover, type="merge", anonymous_id=attacker, state=None)], 400,
             "reserved_type"),
            ([{"user_id": attacker, "ts": now + 3, "type": "view", "product_id": "p",
               "anonymous_id": victim, "anonymous_position": 1 << 40}], 400, "reserved_field"),
        ]
        for body, status, reason in tries:
            code, answer = post(port, body, PUBLIC)
            assert code == status, answer
            assert answer.get("reason", (answer.get("errors") or [{}])[0].get("reason")) == reason
        assert collector.metric("scenetrigger_collector_identify_refused_total") == 3
        # Even a statement that did reach Kafka (a backend bug) cannot re-point a known user.
        send_raw(kafka_bootstrap, events, [(victim.encode(), orjson.dumps(takeover))])
        # The victim's next view fires for the victim; an hour later the cart timer too.
        assert post(port, [{"user_id": victim, "ts": now + 4, "type": "view", "product_id": "p"},
                           {"user_id": victim, "ts": now + 3_600_000, "type": "view",
                            "product_id": "z"}], PUBLIC)[0] == 202
        wait_for("the victim's triggers", lambda: all(worker.metric(
            "scenetrigger_triggers_total", scene=scene) >= 1 for scene in ("rv", "abandon")),
            60, [worker])
        wait_for("everything taken", lambda: all_committed(kafka_bootstrap, prefix, events),
                 60, [worker])
        assert worker.metric("scenetrigger_events_total", result="rejected",
                             reason="identify_known_user") == 1
    finally:
        collector.stop()
        worker.stop()
    fired = read_topic(kafka_bootstrap, f"{prefix}.triggers")
    assert sorted((r["scene"], r["user_id"]) for r in fired) == [("abandon", victim),
                                                                  ("rv", victim)]
    stored = events_of(read_topic(kafka_bootstrap, events))
    assert not [e for e in stored if attacker in (e.get("user_id"), e.get("known_id"))
                and e.get("type") != "identify"]  # nothing addressed to the attacker
    dead = read_topic(kafka_bootstrap, f"{prefix}.dead-letters")
    # The collector's 400s are dead-lettered (its 403s store nothing); the worker's refusal.
    assert Counter(d["reason"] for d in dead) == Counter(
        {"reserved_type": 2, "reserved_field": 1, "identify_known_user": 1})


def test_the_loop_pair_ends_in_a_bounded_number_of_records(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    a, b = f"loopA-{run}", f"loopB-{run}"
    prefix = unique("t-idloop")
    worker, collector = start(tmp_path, kafka_bootstrap, prefix)
    port = collector.metrics_port
    now = int(time.time() * 1000)
    events = f"{prefix}.events"
    try:
        # Sent together by the backend: neither merge has landed when the other is taken.
        sent = [{"user_id": a, "ts": now, "type": "view", "product_id": "p"},
                {"user_id": b, "ts": now, "type": "view", "product_id": "q"},
                {"user_id": a, "ts": now + 1, "type": "identify", "known_id": b},
                {"user_id": b, "ts": now + 2, "type": "identify", "known_id": a}]
        assert post(port, sent, BACKEND)[0] == 202
        later = [{"user_id": user, "ts": now + 10 + n, "type": "view", "product_id": "p"}
                 for n in range(20) for user in (a, b)]
        assert post(port, later, PUBLIC)[0] == 202
        wait_for("everything taken", lambda: all_committed(kafka_bootstrap, prefix, events),
                 90, [worker])
        first = events_of(read_topic(kafka_bootstrap, events))
        wait_for("still everything taken", lambda: all_committed(
            kafka_bootstrap, prefix, events), 30, [worker])
        second = events_of(read_topic(kafka_bootstrap, events))
    finally:
        collector.stop()
        worker.stop()
    inputs = len(sent) + len(later)
    kinds = Counter(e["type"] for e in second)
    # Nothing more once everything was taken; each input cost at most a forward
    # and a return (an event taken while both ids stood for each other).
    assert len(second) == len(first) <= 3 * inputs, kinds
    dead = read_topic(kafka_bootstrap, f"{prefix}.dead-letters")
    assert Counter(d["reason"] for d in dead) <= Counter({"identity_cycle": 2})
    fired = read_topic(kafka_bootstrap, f"{prefix}.triggers")
    assert {r["user_id"] for r in fired} <= {a, b}  # the views counted for their own ids
    assert worker.process.returncode == 0, worker.log_tail()


def test_users_merge_moves_a_known_user_and_is_decision_logged(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    run = uuid.uuid4().hex[:6]
    old, new, device = f"old-{run}", f"new-{run}", f"dev-{run}"
    prefix = unique("t-idmerge")
    worker, collector = start(tmp_path, kafka_bootstrap, prefix)
    port = collector.metrics_port
    now = int(time.time() * 1000)
    decisions_file = tmp_path / "decisions.jsonl"

    def merge(token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scenetrigger.cli.main", "users", "merge", old, new, "--broker",
             kafka_bootstrap, "--topic-prefix", prefix, "--decisions", str(decisions_file),
             "--json"], check=False, capture_output=True, text=True, timeout=60,
            env={**os.environ, "SCENETRIGGER_ADMIN_TOKENS": "ops=op-secret",
                 "SCENETRIGGER_TOKEN": token})

    try:
        assert post(port, [{"user_id": device, "ts": now, "type": "identify",
                            "known_id": old}], BACKEND)[0] == 202
        assert post(port, [{"user_id": old, "ts": now + 1, "type": "view",
                            "product_id": "p"}], PUBLIC)[0] == 202
        events = f"{prefix}.events"
        # old is a known user once the device's merge has landed on its partition.
        wait_for("the login merged", lambda: all_committed(kafka_bootstrap, prefix, events),
                 60, [worker])
        # An identify cannot move a known user, whoever sends it.
        assert post(port, [{"user_id": old, "ts": now + 2, "type": "identify",
                            "known_id": new}], BACKEND)[0] == 202
        refused = merge("wrong")
        assert refused.returncode != 0 and "not valid" in refused.stderr
        done = merge("op-secret")
        assert done.returncode == 0, done.stderr
        result = orjson.loads(done.stdout)
        assert (result["merged"], result["into"], result["by"]) == (old, new, "ops")
        # The device still browsing under its id: its view and the old id's view add up for new.
        assert post(port, [{"user_id": device, "ts": now + 3, "type": "view",
                            "product_id": "p"}], PUBLIC)[0] == 202
        wait_for("the merged user's trigger", lambda: worker.metric(
            "scenetrigger_triggers_total", scene="rv") >= 1, 60, [worker])
    finally:
        collector.stop()
        worker.stop()
    fired = read_topic(kafka_bootstrap, f"{prefix}.triggers")
    assert [(r["scene"], r["user_id"]) for r in fired] == [("rv", new)]
    dead = read_topic(kafka_bootstrap, f"{prefix}.dead-letters")
    assert [d["reason"] for d in dead] == ["identify_known_user"]
    logged = [r for r in read_topic(kafka_bootstrap, f"{prefix}.decisions")
              if r.get("rule") == "admin_merge"]
    assert sorted(r["user_id"] for r in logged) == sorted([old, new])
    assert all(r["outcome"] == "merged" and "by ops" in r["figures"] for r in logged)
    assert len(decisions_file.read_text().splitlines()) == 2
