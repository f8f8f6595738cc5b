"""`replay --jobs N`: the trigger lines are byte-equal to one process and the
summary the same, on both samples and on a persona stream with identify
events whose two ids fall in different shards (merges, chains, re-points);
a line the byte routing gets wrong falls back to one process."""

from __future__ import annotations

import random
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.loader import load_config
from scenetrigger.demo.personas import generate_events
from scenetrigger.runtime.replay_shards import replay_sharded
from tests.paths import DATA
from tests.scenetrigger.test_replay_sharded import assert_same

CLI = Path(sys.executable).with_name("scenetrigger")
TIMING = {"seconds", "events_per_second"}


def cli_replay(path: Path, jobs: int, tmp: Path, *extra: str) -> tuple[bytes, dict[str, Any]]:
    out, summary = tmp / f"triggers-{jobs}.jsonl", tmp / f"summary-{jobs}.json"
    done = subprocess.run(
        [str(CLI), "replay", str(path), "--jobs", str(jobs), "--out", str(out),
         "--summary-json", str(summary), "--no-progress", *extra],
        capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    report = orjson.loads(summary.read_bytes())
    return out.read_bytes(), {k: v for k, v in report.items() if k not in TIMING}


@pytest.mark.parametrize("sample", ["rees46-2019-10-01-sample.csv", "otto-sample.jsonl"])
def test_jobs_output_is_byte_equal_on_the_samples(sample: str, tmp_path: Path) -> None:
    one, summary = cli_replay(DATA / sample, 1, tmp_path)
    assert one.count(b"\n") > 0
    for jobs in (2, 3):
        assert cli_replay(DATA / sample, jobs, tmp_path) == (one, summary)


def shard_of(user: str, shards: int) -> int:
    return zlib.crc32(user.encode()) % shards


def identified_stream(seed: int) -> list[dict[str, Any]]:
    """Persona events where some users browse anonymously first: their events
    before a cut carry an anonymous id, then an identify; also chains (an
    anonymous id identified as another anonymous id) and re-points."""
    rng = random.Random(seed)
    events = list(generate_events(12_000, users=900, seed=seed, rate=5.0))
    by_user: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        by_user.setdefault(e["user_id"], []).append(i)
    users = sorted(u for u, idx in by_user.items() if len(idx) >= 6)
    rng.shuffle(users)
    inserts: list[tuple[int, dict[str, Any]]] = []
    for n, user in enumerate(users[:150]):
        idx = by_user[user]
        cut = idx[rng.randrange(2, len(idx) - 2)]
        anon = f"anon-{n}"
        for i in idx:
            if i < cut:
                events[i] = {**events[i], "user_id": anon}
        known = user
        if n % 10 == 0:  # a chain: anon -> anon2 first, anon2 -> user later
            inserts.append((cut, {"user_id": anon, "ts": events[cut]["ts"], "type": "identify",
                                  "known_id": f"chain-{n}"}))
            anon = f"chain-{n}"
        if n % 15 == 1:  # a shared device: anon is first known as another user
            other = users[-1 - n]
            inserts.append((cut, {"user_id": anon, "ts": events[cut]["ts"], "type": "identify",
                                  "known_id": other}))
        inserts.append((cut, {"user_id": anon, "ts": events[cut]["ts"], "type": "identify",
                              "known_id": known}))
    for at, event in sorted(inserts, key=lambda p: p[0], reverse=True):
        events.insert(at, event)
    return events


def test_identify_across_shards_merges_as_one_process(tmp_path: Path) -> None:
    events = identified_stream(11)
    pairs = [(e["user_id"], e["known_id"]) for e in events if e["type"] == "identify"]
    assert sum(shard_of(a, 2) != shard_of(k, 2) for a, k in pairs) > 30  # not vacuous
    path = tmp_path / "identify.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    config = load_config()
    fired = assert_same(path, "jsonl", config, 2, advance_to=events[-1]["ts"] + 3_600_000)
    assert_same(path, "jsonl", config, 3)
    known = {k for _, k in pairs}
    merged_fires = [t for t in fired if t.user_id in known]
    assert {t.scene for t in merged_fires} >= {"repeat_view_no_purchase", "cart_abandonment"}
    # and through the command: the lines byte for byte, the summary
    one, summary = cli_replay(path, 1, tmp_path)
    assert summary["users"] < len({e["user_id"] for e in events})  # anonymous states merged
    assert cli_replay(path, 2, tmp_path) == (one, summary)


@pytest.mark.parametrize(("bad", "falls_back"), [
    # a duplicate key (orjson keeps the last): the scanner leaves it to the parser
    (b'{"user_id":"u1","ts":5000,"ts":1,"type":"view"}', False),
    (b'{"user_id":"u1","ts":5000,"type":"view","\\u0074s":1}', False),
    (b'{"user_id":"u2","ts":90000}', True),  # no type: rejected, must not move the clock
    (b'{"user_id":"u3","ts":90000,"type":"view","x":}', True),  # invalid JSON further on
])
def test_a_line_the_byte_routing_gets_wrong_falls_back(bad: bytes, falls_back: bool,
                                                      tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    lines = [orjson.dumps({"user_id": f"u{i % 7}", "ts": 1000 * i, "type": t})
             for i, t in enumerate(["cart", "view", "view", "view", "cart"] * 4)]
    lines.insert(9, bad)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert_same(path, "jsonl", load_config(), 2, advance_to=200_000)
    assert_same(path, "jsonl", load_config(), 3, advance_to=200_000)
    assert caplog.text.count("byte routing was wrong") == (2 if falls_back else 0)


def test_other_key_orders_and_escapes_take_the_parsed_route(tmp_path: Path) -> None:
    lines = [
        b'{"ts":1000,"user_id":"a","type":"cart"}',
        b'{"user_id":"\\u0062","ts":2000,"type":"cart"}',  # "b", escaped
        b'{"user_id": "c", "ts": 3000, "type": "cart"}',
        b'{"user_id":"b","ts":2500,"type":"\\u0069dentify","known_id":"a"}',
        b'{"user_id":"c","ts":40000000,"type":"view"}',
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for shards in (2, 3, 4):
        assert_same(path, "jsonl", load_config(), shards)
    fired: list[Any] = []
    replay_sharded(str(path), "jsonl", load_config(), 2, fired.append)
    assert [(t.scene, t.user_id) for t in fired] == [("cart_abandonment", "a")] * 1 + [
        ("cart_abandonment", "c")]
