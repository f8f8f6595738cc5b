"""The line scanner of sharded JSONL replay: the C one (built when a compiler
is present) and its Python twin give the same answers on every line shape,
and sharded replay with either gives replay's output; a timer armed behind
the clock fires where one process fires it (at the next record)."""

from __future__ import annotations

import shutil
import zlib
from array import array
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.loader import load_config, validate_config
from scenetrigger.runtime.replay_scan import INT64_MAX, Scanner, native_scanner, scan_py
from scenetrigger.runtime.replay_shards import replay_sharded
from tests.scenetrigger.test_replay_jobs import identified_stream
from tests.scenetrigger.test_replay_sharded import single

NATIVE = native_scanner()
SCANNERS: list[Any] = [pytest.param(scan_py, id="python"),
                       pytest.param(NATIVE, id="c")]


def test_the_c_scanner_is_built_where_a_compiler_is() -> None:
    """setup.py builds it when one is present; without, replay runs the Python one."""
    if shutil.which("cc") or shutil.which("gcc"):
        assert NATIVE is not None


LINES = [
    b'{"user_id":"u1","ts":1000,"type":"view"}\n',
    b'{"user_id":"u2","ts":-5,"type":"view"}\n',  # negative time
    b'{"user_id":"u3","ts":999}\r\n',  # "}" after the time, CRLF
    b'{"user_id":"","ts":7,"type":"view"}\n',  # empty id: the parser decides
    b'{"user_id":"u\\u0031","ts":1,"type":"view"}\n',  # an escape: parsed
    b'{"ts":1,"user_id":"u1","type":"view"}\n',  # another key order
    b'{"user_id":"u1","ts":12x}\n',  # not a number end
    b'{"user_id":"u1","ts":9223372036854775807,"type":"view"}\n',  # int64 max
    b'{"user_id":"u1","ts":9223372036854775808,"type":"view"}\n',  # past it
    b'{"user_id":"u1","ts":-9223372036854775807,"type":"view"}\n',
    b'\n',  # blank
    b'{"user_id":"' + b"x" * 70 + b'","ts":1,"type":"view"}\n',  # id over the limit
    b'{"user_id":"u4","ts":2000000,"type":"view"}\n',  # past the time limit below
    b'{"user_id":"\xc3\xa9t\xc3\xa9","ts":3,"type":"view"}\n',  # UTF-8 id
    b'{"user_id":"u5","ts":4,"type":"view","pad":"' + b"p" * 300 + b'"}\n',  # long line
    b'{"user_id":"u7","ts":5,"ts":1}\n',  # a key again: parsed
    b'{"user_id":"u7","ts":5,"x":{"user_id":"u8"}}\n',  # (even nested)
    b'{"user_id":"u7","ts":5,"\\u0074s":1}\n',  # spelled with an escape
    b'{"user_id":"u7","ts":5,"x":"a\\\\u","y":"\\"ts\\""}\n',  # \\u and \"ts\": not keys
    b'{"user_id":"u6","ts":5,"type":"view"}',  # the last line, no newline
]


def scan_all(scan: Scanner, buf: bytes, shards: int, shard: int, roots: Any,
             limit: int) -> list[Any]:
    """Scan the buffer to its end, stepping over each line left to Python."""
    out, at, base, clock = [], 0, 0, -(1 << 63)
    while at < len(buf):
        stop, lines, positions, times, clocks = scan(buf, at, len(buf), shards, shard, roots,
                                                     base, clock, limit, 200, 64)
        got = array("q", clocks)
        base, clock = base + len(got), got[-1] if got else clock
        out.append((stop, lines, list(array("q", positions)), list(array("q", times)),
                    list(got)))
        at = stop
        if at < len(buf):
            nl = buf.find(b"\n", at)
            at = len(buf) if nl == -1 else nl + 1
            base += 1
    return out


@pytest.mark.parametrize("shards", [1, 2, 3])
@pytest.mark.parametrize("roots", [None, {b"u2": b"u1", b"u3": b"zz"}])
@pytest.mark.parametrize("limit", [INT64_MAX, 1_000_000])
def test_the_two_scanners_agree(shards: int, roots: Any, limit: int) -> None:
    assert NATIVE is not None, "build it: make install (needs a C compiler)"
    buf = b"".join(LINES)
    for shard in range(shards):
        python = scan_all(scan_py, buf, shards, shard, roots, limit)
        assert python == scan_all(NATIVE, buf, shards, shard, roots, limit)
        taken = [line for run in python for line in run[1]]
        # each line read from its bytes went to the owner of its root
        for raw in taken:
            user = raw.split(b'"')[3]
            root = (roots or {}).get(user, user)
            assert zlib.crc32(root) % shards == shard
    every = [line for shard in range(shards)
             for run in scan_all(scan_py, buf, shards, shard, roots, limit) for line in run[1]]
    expected = {0, 1, 2, 3, 9, 13, 18, 19} | ({7, 12} if limit == INT64_MAX else set())
    assert sorted(every) == sorted(LINES[i] for i in expected)


def test_clocks_are_the_running_maximum() -> None:
    buf = b"".join(orjson.dumps({"user_id": f"u{i}", "ts": ts}) + b"\n"
                   for i, ts in enumerate([5, 3, 9, 9, 2, 11]))
    for scan in (scan_py, NATIVE):
        assert scan is not None
        stop, _, positions, _, clocks = scan(buf, 0, len(buf), 2, 0, None, 10, 4, INT64_MAX,
                                             100, 64)
        assert stop == len(buf)
        assert list(array("q", clocks)) == [5, 5, 9, 9, 9, 11]
        assert all(11 <= p <= 16 for p in array("q", positions))


@pytest.mark.parametrize("scan", SCANNERS)
def test_sharded_replay_with_each_scanner_is_replay(scan: Scanner, tmp_path: Path) -> None:
    events = identified_stream(3)
    lines = [orjson.dumps(e) for e in events]
    lines[100:100] = [b'{"ts":1,"user_id":"u00001","type":"cart"}', b"", b"not json"]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    config = load_config()
    expected, one = single(path, "jsonl", config, events[-1]["ts"] + 600_000)
    for shards in (2, 3):
        fired: list[Any] = []
        many = replay_sharded(str(path), "jsonl", config, shards, fired.append,
                              events[-1]["ts"] + 600_000, scan)
        assert fired == expected
        assert (many.events_read, many.rejected, many.pending, many.users) == (
            one.events_read, one.rejected, one.pending, one.users)


def users_apart() -> tuple[str, str]:
    found: dict[int, str] = {}
    for i in range(100):
        found.setdefault(zlib.crc32(f"u{i}".encode()) % 2, f"u{i}")
    return found[0], found[1]


@pytest.mark.parametrize("scan", SCANNERS)
def test_a_timer_armed_behind_the_clock_fires_at_the_next_record(scan: Scanner,
                                                                 tmp_path: Path) -> None:
    """Armed by a late event, due already: one process fires it at the next
    record, even one that does not move the clock, before that record's own
    triggers; so must the shards, whose clock is the other users' too."""
    a, b = users_apart()
    config = validate_config({"scenes": {
        "gone": {"kind": "absence", "start": {"type": "cart"}, "after": 10},
        "seen": {"kind": "arrival", "when": {"type": "view"}},
    }})
    lines = [
        {"user_id": a, "ts": 100, "type": "page"},
        {"user_id": b, "ts": 20, "type": "cart"},  # late: due at 30, the clock is at 100
        {"user_id": a, "ts": 100, "type": "view"},  # no clock move: b's timer fires here
        {"user_id": b, "ts": 200, "type": "view"},
    ]
    path = tmp_path / "late.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    expected, _ = single(path, "jsonl", config)
    assert [(t.scene, t.user_id) for t in expected] == [("gone", b), ("seen", a), ("seen", b)]
    fired: list[Any] = []
    replay_sharded(str(path), "jsonl", config, 2, fired.append, None, scan)
    assert fired == expected
