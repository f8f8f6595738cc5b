"""Sharded replay gives exactly replay's output: triggers in the same order,
the same pending timers and counts, also with cross-shard deadline ties."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.loader import load_config, validate_config
from config.models import AppConfig
from scenetrigger.demo.personas import generate_events
from scenetrigger.runtime.replay import ReplaySummary, new_engine, replay
from scenetrigger.runtime.replay_shards import replay_shard, replay_sharded
from scenetrigger.runtime.sources import Format, read_events
from tests.paths import DATA
from triggers import Trigger


def single(path: Path, fmt: Format, config: AppConfig,
           advance_to: int | None = None) -> tuple[list[Trigger], ReplaySummary]:
    fired: list[Trigger] = []
    with path.open("rb") as fh:
        summary = replay(read_events(fh, fmt), new_engine(config), fired.append,
                         advance_to=advance_to)
    return fired, summary


def assert_same(path: Path, fmt: Format, config: AppConfig, shards: int,
                advance_to: int | None = None) -> list[Trigger]:
    expected, one = single(path, fmt, config, advance_to)
    fired: list[Trigger] = []
    many = replay_sharded(str(path), fmt, config, shards, fired.append, advance_to)
    assert fired == expected
    assert many.pending == one.pending
    assert many.triggers == one.triggers
    assert (many.events_read, many.events_taken, many.rejected, many.users, many.clock) == (
        one.events_read, one.events_taken, one.rejected, one.users, one.clock)
    return fired


@pytest.mark.parametrize("shards", [2, 3])
def test_rees46_sample(shards: int) -> None:
    fired = assert_same(DATA / "rees46-2019-10-01-sample.csv", "rees46", load_config(), shards)
    assert len(fired) == 425


@pytest.mark.parametrize("shards", [2, 4])
def test_otto_sample_with_clock_jumps(shards: int) -> None:
    assert_same(DATA / "otto-sample.jsonl", "otto", load_config(), shards)


def test_persona_stream_with_advance(tmp_path: Path) -> None:
    path = tmp_path / "personas.jsonl"
    events = list(generate_events(15_000, users=1200, seed=5, rate=5.0))
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    fired = assert_same(path, "jsonl", load_config(), 3, advance_to=events[-1]["ts"] + 60_000)
    assert {t.scene for t in fired} == {"repeat_view_no_purchase", "cart_abandonment",
                                        "promo_arrival"}


def users_in_shards(count: int, shards: int) -> list[str]:
    """One user per shard, for `count` shards."""
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(zlib.crc32(f"u{i}".encode()) % shards, f"u{i}")
    return [found[k] for k in range(count)]


def test_cross_shard_ties_late_arms_and_rejects(tmp_path: Path) -> None:
    a, b = users_in_shards(2, 2)
    scenes: dict[str, Any] = {
        "first": {"kind": "absence", "start": {"type": "cart"}, "after": 10},
        "views": {"kind": "arrival", "when": {"type": "view"}},
        "second": {"kind": "absence", "start": {"type": {"in": ["cart", "view"]}},
                   "cancel": {"type": "purchase"}, "after": 10},
    }
    lines = [
        {"user_id": b, "ts": 0, "type": "cart"},
        {"user_id": a, "ts": 0, "type": "cart"},
        {"user_id": b, "ts": 0, "type": "view"},  # re-arms b's "second" after a's
        "not json",
        {"user_id": a, "ts": 50, "type": "view"},
        {"user_id": b, "ts": 20, "type": "cart"},  # late: deadline 30 behind the clock
        {"user_id": a, "ts": 45, "type": "cart"},
        {"user_id": b, "ts": 50, "type": "view"},
        {"user_id": a, "ts": 55, "type": "purchase"},
    ]
    path = tmp_path / "ties.jsonl"
    path.write_bytes(b"".join(
        (line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n" for line in lines
    ))
    config = validate_config({"scenes": scenes})
    fired = assert_same(path, "jsonl", config, 2)
    timers = [(t.scene, t.user_id, t.ts) for t in fired if t.scene != "views"]
    # same deadline 10: in arm order across shards, b's "second" re-armed last
    assert timers[:4] == [("first", b, 10), ("first", a, 10), ("second", a, 10),
                          ("second", b, 10)]


def test_one_shard_in_process_is_plain_replay() -> None:
    path = DATA / "otto-sample.jsonl"
    expected, _ = single(path, "otto", load_config())
    with path.open("rb") as fh:
        result = replay_shard(read_events(fh, "otto"), new_engine(load_config()), 0, 1)
    got = [Trigger(scene, user, key, ts) for _, scene, user, key, ts in result.triggers]
    assert got == expected


def test_timers_firing_inside_a_multi_event_otto_line(tmp_path: Path) -> None:
    """One OTTO line holds many events: tags must follow events, not lines."""
    sessions = {zlib.crc32(str(n).encode()) % 2: n for n in range(20)}
    a, b = sessions[0], sessions[1]
    lines = [
        {"session": a, "events": [{"aid": 1, "ts": 0, "type": "carts"}]},
        {"session": b, "events": [{"aid": 2, "ts": t, "type": "clicks"} for t in (5, 20, 21)]},
    ]
    path = tmp_path / "otto.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    scenes = {"cart": {"kind": "absence", "start": {"type": "cart"}, "after": 10},
              "views": {"kind": "arrival", "when": {"type": "view"}}}
    fired = assert_same(path, "otto", validate_config({"scenes": scenes}), 2)
    assert [(t.scene, t.ts) for t in fired] == [("views", 5), ("cart", 10), ("views", 20),
                                                ("views", 21)]
