"""A live experiment on config (issue 24.6) on real Kafka: v1 runs, v2 is
pushed with ``--experiment 50%`` and the worker runs v2's scenes for the
users the documented hash picks (blake2b computed here), v1's for the
others; ``explain`` names a user's arm, ``report --experiment`` compares the
arms against counts made here, and ``config promote`` puts v2 in force for
everyone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.versions import digest_of
from tests.agents.worker_support import read_topic, send_raw, start_worker, unique, wait_for
from tests.services import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
TOKENS = {"SCENETRIGGER_ADMIN_TOKENS": "ops=tok-ops", "SCENETRIGGER_TOKEN": "tok-ops"}
SHARE = 0.5


def config_text(count: int) -> str:
    return ("scenes:\n  look:\n    kind: repeat\n    when: {type: view}\n"
            f"    count: {count}\n    within: 30m\n")


def candidate(version: int, user: str) -> bool:
    digest = hashlib.blake2b(f"scenetrigger-config\x1fv{version}\x1f{user}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < SHARE


def test_an_experiment_splits_users_by_hash_and_a_promote_ends_it(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = unique("t-exp")
    base, trial = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    base.write_text(config_text(3))
    trial.write_text(config_text(2))  # the candidate fires on the second view

    def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "scenetrigger.cli.main", *map(str, args)], cwd=REPO,
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, **TOKENS})
        assert done.returncode == 0, done.stderr
        return done

    store = ["--broker", kafka_bootstrap, "--topic-prefix", prefix]
    cli("config", "push", base, "-m", "base", *store)
    worker = start_worker(tmp_path, "w", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "memory", "--config-store", "kafka",
                           "--reload-interval", "500ms"])

    def digest_in_force(digest: str) -> bool:
        return worker.metric("scenetrigger_config_version_info", digest=digest) == 1

    users = [f"u{i}" for i in range(60)]
    arm = {u: candidate(2, u) for u in users}
    assert 0 < sum(arm.values()) < len(users)
    events: list[dict[str, Any]] = []
    try:
        wait_for("the worker on v1", lambda: digest_in_force(digest_of(config_text(3))), 150,
                 [worker])
        pushed = cli("config", "push", trial, "-m", "two views", "--experiment", "50%",
                     "--horizon", "2s", "--json", *store)
        started = orjson.loads(pushed.stdout)["time_ms"]
        wait_for("the worker on the experiment",
                 lambda: not digest_in_force(digest_of(config_text(3))), 60, [worker])
        for i, user in enumerate(users):
            ts = started + 10 + i
            events += [{"user_id": user, "ts": ts, "type": "view", "product_id": "p1"},
                       {"user_id": user, "ts": ts + 100, "type": "view", "product_id": "p1"}]
            if i % 3 == 0:
                events.append({"user_id": user, "ts": ts + 200, "type": "purchase",
                               "price": 10})
        events.append({"user_id": "clock", "ts": started + 3_000, "type": "page"})  # horizon
        send_raw(kafka_bootstrap, f"{prefix}.events",
                 [(e["user_id"].encode(), orjson.dumps(e)) for e in events])
        expected = sorted(u for u in users if arm[u])
        wait_for("the candidate's triggers", lambda: len(
            read_topic(kafka_bootstrap, f"{prefix}.triggers", 10)) >= len(expected), 90, [worker])
        triggers = read_topic(kafka_bootstrap, f"{prefix}.triggers", 10)
        # v2's scenes for the hash's users, v1's (no trigger at two views) for the others
        assert sorted(t["user_id"] for t in triggers) == expected

        # explain names the arm
        events_file, triggers_file = tmp_path / "events.jsonl", tmp_path / "triggers.jsonl"
        events_file.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
        triggers_file.write_bytes(b"\n".join(orjson.dumps(t) for t in triggers) + b"\n")
        shown = cli("explain", expected[0], "--events", events_file, "--config", trial,
                    "--config-store", "kafka", *store).stdout
        assert f"{expected[0]} is in the candidate arm (runs v2)" in shown
        other = next(u for u in users if not arm[u])
        shown = orjson.loads(cli("explain", other, "--events", events_file, "--config-store",
                                 "kafka", "--json", *store).stdout)
        assert shown["config_experiment"]["arm"] == "base"

        # the report compares the arms: users and buyers per arm counted here
        report = orjson.loads(cli("report", triggers_file, events_file, "--experiment",
                                  "--config-store", "kafka", "--json", "-", *store).stdout)
        buyers = {u for i, u in enumerate(users) if i % 3 == 0}
        for name, inside in (("candidate", True), ("base", False)):
            mine = [u for u in users if arm[u] is inside]
            got = report[name]
            # the "clock" event is past the horizon: no unit
            assert (got["users"], got["converted"]) == (len(mine), len(buyers & set(mine)))
        assert report["experiment"]["version"] == 2 and report["experiment"]["base"] == 1
        assert report["stopping"]["rule"] == "fixed horizon" and report["stopping"]["reached"]
        assert report["triggers_per_user_diff"]["diff"] > 0

        # promote: v2 for everyone, the base arm's new users fire on two views too
        cli("config", "promote", "-m", "ship it", *store)
        wait_for("the worker on v3", lambda: digest_in_force(digest_of(config_text(2))), 60,
                 [worker])
        later = [u for u in (f"late{i}" for i in range(40)) if not candidate(2, u)][:5]
        now = started + 10_000
        send_raw(kafka_bootstrap, f"{prefix}.events", [
            (u.encode(), orjson.dumps({"user_id": u, "ts": now + k, "type": "view",
                                       "product_id": "p1"})) for u in later for k in (0, 100)])
        wait_for("every user on v2", lambda: {t["user_id"] for t in read_topic(
            kafka_bootstrap, f"{prefix}.triggers", 10)} >= set(later), 90, [worker])
        log = cli("config", "log", *store).stdout.splitlines()
        assert log[0].startswith("v3") and "experiment" in log[1]
    finally:
        worker.stop()
    assert "Traceback" not in worker.log_path.read_text(errors="replace"), worker.log_tail()
