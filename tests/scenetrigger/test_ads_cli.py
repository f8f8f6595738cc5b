"""``scenetrigger audiences sync | status | export`` as a user runs them:
a replay output file or the ``PREFIX.audiences`` topic in, the local
platform servers (or a dry run) out; real Redis, real Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.agents.worker_support import _send_raw
from tests.channels.ads_fixtures import (
    AUDIENCE,
    ENV,
    ads_yaml,
    contact_of,
    expected_row,
    platforms_in_thread,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
BIN = Path(sys.executable).parent
NAMES = ("meta", "google", "tiktok", "hook")
CONTACTS = [contact_of(n) for n in range(12)]


def run(*args: str, env: dict[str, str] | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / "scenetrigger"), *args], capture_output=True, text=True,
                          env={**os.environ, **ENV, **(env or {})}, timeout=120, check=False,
                          cwd=cwd)
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def _members_file(path: Path) -> None:
    lines: list[dict[str, Any]] = [{"kind": "trigger", "user_id": "u0", "scene": "x"}]  # other kinds: skipped
    lines += [{"kind": "audience", "audience": AUDIENCE, "user_id": c.user_id, "op": "enter",
               "ts": 1.0 + n, "reason": "viewed"} for n, c in enumerate(CONTACTS)]
    lines += [{"kind": "audience", "audience": AUDIENCE, "user_id": "u5", "op": "exit",
               "ts": 50.0, "reason": "bought"},
              {"kind": "audience", "audience": "elsewhere", "user_id": "u1", "op": "enter",
               "ts": 51.0, "reason": "condition"}]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines) + b"{broken\n")


def _contacts_file(path: Path) -> None:
    path.write_bytes(b"".join(orjson.dumps({"user_id": c.user_id, "email": c.email,
                                            "phone": c.phone}) + b"\n" for c in CONTACTS))


@pytest.mark.parametrize("action", ["sync", "status", "export", "import-spend"])
def test_help(action: str) -> None:
    assert "--json" in run("audiences", action, "--help").stdout


def test_sync_from_a_file_then_status_and_export(redis_url: str, tmp_path: Path) -> None:
    prefix = f"cli{uuid.uuid4().hex[:6]}:"
    members, contacts, cfg = tmp_path / "m.jsonl", tmp_path / "c.jsonl", tmp_path / "ads.yaml"
    _members_file(members)
    _contacts_file(contacts)
    env = {"SCENETRIGGER_REDIS_URL": redis_url}
    run("users", "import", str(contacts), "--prefix", prefix, env=env)
    with platforms_in_thread(storm_rate=0.3) as platforms:
        cfg.write_text(ads_yaml(platforms, prefix))
        done = run("audiences", "sync", "--config", str(cfg), "--from", str(members), "--json",
                   env=env)
        summary: dict[str, Any] = orjson.loads(done.stdout)
        for name in NAMES:
            want = {expected_row(name, c) for c in CONTACTS if c.user_id != "u5"}
            assert platforms.members(name) == want, name
            assert expected_row(name, CONTACTS[5]) in platforms.by_name[name].removed[
                next(iter(platforms.by_name[name].members))]
        again = orjson.loads(run("audiences", "sync", "--config", str(cfg), "--from",
                                 str(members), "--json", env=env).stdout)
    # a re-read sends only what changed: u5 entered and left again
    assert again["outcomes"] == {"already_synced": 11, "added": 1, "removed": 1, "unmapped": 1}
    assert summary["records"] == 14 and summary["bad_records"] == 1
    assert summary["outcomes"] == {"added": 12, "removed": 1, "unmapped": 1}
    assert summary["pending"] == 0
    assert "unreadable membership record" in done.stderr
    for contact in CONTACTS:  # no identifier in what the command prints
        assert contact.email is None or contact.email.strip().lower() not in (
            done.stdout + done.stderr).lower()
    status = orjson.loads(run("audiences", "status", "--config", str(cfg), "--json",
                              env=env).stdout)
    rows = {row["sink"]: row for row in status["sinks"]}
    assert sorted(rows) == sorted(NAMES)
    for row in rows.values():
        # two runs: the second one's u5 enter and exit meet in the queue (the exit wins)
        assert (row["synced_members"], row["add_members"], row["remove_members"]) == (11, 12, 2)
    exported = [orjson.loads(line) for line in run(
        "audiences", "export", "--config", str(cfg), env=env).stdout.splitlines()]
    assert len(exported) == 11 * 4
    assert {e["user_id"] for e in exported} == {c.user_id for c in CONTACTS} - {"u5"}


def test_a_dry_run_from_the_topic_sends_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic_prefix = f"ads{uuid.uuid4().hex[:6]}"
    records = [(f"{AUDIENCE}|{c.user_id}".encode(), orjson.dumps({
        "audience": AUDIENCE, "user_id": c.user_id, "op": "enter", "ts": 1.0, "reason": "r"}))
        for c in CONTACTS[:5]] + [(b"bad|key", b'{"audience": "x"}')]
    asyncio.run(_send_raw(kafka_bootstrap, f"{topic_prefix}.audiences", records))
    contacts, cfg = tmp_path / "c.jsonl", tmp_path / "ads.yaml"
    _contacts_file(contacts)
    with platforms_in_thread() as platforms:
        cfg.write_text(ads_yaml(platforms))
        done = run("audiences", "sync", "--config", str(cfg), "--broker", kafka_bootstrap,
                   "--topic-prefix", topic_prefix, "--dry-run", "--directory", str(contacts),
                   "--json")
        assert all(p.requests == [] for p in platforms.by_name.values())
    summary = orjson.loads(done.stdout)
    assert summary["dry_run"] is True and summary["records"] == 5 and summary["bad_records"] == 1
    assert summary["outcomes"] == {"added": 5}
    assert {b["sink"] for b in summary["batches"]} == set(NAMES)
    assert all(b["members"] == 5 for b in summary["batches"])
