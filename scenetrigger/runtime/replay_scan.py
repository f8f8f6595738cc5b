"""What one shard of a sharded replay reads: its own records, and the clock.

Every shard reads the whole input, but applies only its own users' records;
from the others it needs only the clock, the running maximum of the times.
:class:`ClockLine` keeps that clock after every record, so a shard can say
where a timer fired in the one-process replay without moving its clock on
every line (:meth:`ClockLine.fired_at`).

JSONL lines that start ``{"user_id":"U","ts":N`` are read from their bytes by
a line scanner: the C one (``_linescan.c``, built when a compiler is there)
or its pure-Python twin here, which gives the same answers. Any other line,
or one where a key could repeat the head's (``"user_id"`` or ``"ts"`` again,
a ``\\u`` escape), is parsed by every shard as the one-process replay parses
it; so a line read from its bytes has the user and time its owner parses.
"""

from __future__ import annotations

import re
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from scenetrigger.runtime.sources import Record, read_for
from triggers.errors import EventRejected
from triggers.events import Event
from triggers.host import EngineHost, check_future

END = 1 << 62  # the "record" of what fires after the last one (the final advance)
INT64_MAX = (1 << 63) - 1
CHUNK = 1 << 22  # bytes read at a time
# (position, (line number, event or rejection), ts read from the line's bytes or None)
OwnRecord = tuple[int, Record, "int | None"]
# scan(buf, start, end, shards, shard, roots, base, clock, limit, max_line, max_user)
#   -> (stop, own lines, own positions, own times, clocks): see _linescan.c
Scanner = Callable[..., tuple[int, list[bytes], bytes, bytes, bytes]]

_HEAD = re.compile(rb'\{"user_id":"([^"\\]*)","ts":(-?[0-9]+)[,}]')
# After the head: "user_id" or "ts" again (a key may repeat the head's) or a
# \u escape (one may spell them); other escapes are stepped over whole.
_REST = re.compile(rb'\\u|"(?:user_id|ts)"|\\.', re.DOTALL)


def _plain_rest(raw: bytes, start: int) -> bool:
    return all(m[0][0] == 0x5C and m[0] != b"\\u" for m in _REST.finditer(raw, start))


def scan_py(buf: bytes, start: int, end: int, shards: int, shard: int,
            roots: Mapping[bytes, bytes] | None, base: int, clock: int, limit: int,
            max_line: int, max_user: int) -> tuple[int, list[bytes], bytes, bytes, bytes]:
    """The pure-Python twin of ``_linescan.scan`` (same arguments, same answer)."""
    lines: list[bytes] = []
    positions, times, clocks = array("q"), array("q"), array("q")
    match, crc32 = _HEAD.match, zlib.crc32
    at, read = start, base
    while at < end:
        nl = buf.find(b"\n", at, end)
        stop = end if nl == -1 else nl + 1
        raw = buf[at:stop]
        found = match(raw) if len(raw) <= max_line else None
        if found is None:
            break
        user, digits = found.group(1, 2)
        ts = int(digits)
        if (len(user) > max_user or abs(ts) > INT64_MAX or ts > limit
                or not _plain_rest(raw, found.end() - 1)):
            break
        read += 1
        clock = max(clock, ts)
        clocks.append(clock)
        if crc32(roots.get(user, user) if roots else user) % shards == shard:
            lines.append(raw)
            positions.append(read)
            times.append(ts)
        at = stop
    return at, lines, positions.tobytes(), times.tobytes(), clocks.tobytes()


def native_scanner() -> Scanner | None:
    """The C scanner, None when it was not built (no compiler at install)."""
    try:
        from scenetrigger.runtime import _linescan  # type: ignore[attr-defined]
    except ImportError:
        return None
    scan: Scanner = _linescan.scan
    return scan


class ClockLine:
    """The one-process replay's clock after each record (``clocks[n]``,
    ``clocks[0]``: before the first) and the records it rejected: where the
    engine was not called, so no timer fired."""

    def __init__(self, start: int) -> None:
        self.clocks = array("q", [start])
        self.rejected: set[int] = set()

    @property
    def read(self) -> int:
        return len(self.clocks) - 1

    def event(self, ts: int) -> None:
        clocks = self.clocks
        clocks.append(max(clocks[-1], ts))

    def reject(self) -> None:
        self.rejected.add(len(self.clocks))
        self.clocks.append(self.clocks[-1])

    def fired_at(self, deadline: int, arm: tuple[Any, ...]) -> int:
        """The record at which the one-process engine fires a timer due at
        ``deadline`` that was armed at ``arm`` (``(record, 1)`` by that
        record's event, or the tag ``(record, 0, ...)`` of a fire): the first
        record whose clock is past the deadline, and not before the engine
        is next called after the arming (at once for a fire's: the same
        loop). ``END`` when that is after the last record read."""
        at = bisect_right(self.clocks, deadline)
        record = arm[0]
        if arm[1]:  # an event's: the engine is next called at the next record it takes
            record += 1
            while record in self.rejected:
                record += 1
        return END if max(at, record) >= len(self.clocks) else max(at, record)


class Router:
    """Which shard owns a user: the crc32 of its identity root, mod shards."""

    def __init__(self, shard: int, shards: int, roots: Mapping[str, str]) -> None:
        self.shard, self.shards, self.roots = shard, shards, roots
        self.roots_bytes = {k.encode(): v.encode() for k, v in roots.items()}

    def owns(self, user_id: str) -> bool:
        roots = self.roots
        return zlib.crc32(roots.get(user_id, user_id).encode()) % self.shards == self.shard


def parsed_own(records: Iterable[Record], line: ClockLine, router: Router,
               now: int, bound: int | None) -> Iterator[OwnRecord]:
    """This shard's records among records parsed by every shard (lines of no
    user: shard 0's), the clock line kept; an event too far ahead of the wall
    clock is rejected (``future_ts``, counted by its owner)."""
    owns, shard = router.owns, router.shard
    for rec in records:
        item = rec[1]
        if type(item) is Event:
            if bound is not None and item.ts - now > bound:
                line.reject()
                if owns(item.user_id):
                    try:
                        check_future(item.ts, now, bound)
                    except EventRejected as exc:
                        yield line.read, (rec[0], exc), None
                continue
            line.event(item.ts)
            if owns(item.user_id):
                yield line.read, rec, None
        else:
            line.reject()
            if shard == 0:
                yield line.read, rec, None


def jsonl_own(stream: IO[bytes], host: EngineHost, line: ClockLine, router: Router,
              now: int, bound: int | None, scan: Scanner) -> Iterator[Iterable[OwnRecord]]:
    """This shard's records of a JSONL stream, in runs (chain them): lines the
    scanner reads from their bytes (parsed here only if this shard's), and
    one by one, parsed, the lines it leaves (:func:`parsed_own`)."""
    limit = INT64_MAX if bound is None else now + bound
    max_line, max_user = host.rules.max_line_bytes, host.ids.max_chars
    shards, shard, roots = router.shards, router.shard, router.roots_bytes or None
    clocks = line.clocks
    tail = b""
    while True:
        chunk = stream.read(CHUNK)
        buf = tail + chunk if tail else chunk
        end = buf.rfind(b"\n") + 1 if chunk else len(buf)
        at = 0
        while at < end:
            at, lines, positions, times, after = scan(
                buf, at, end, shards, shard, roots, line.read, clocks[-1], limit,
                max_line, max_user)
            clocks.frombytes(after)
            if lines:
                yield zip(array("q", positions), read_for(host, lines, "jsonl"),
                          array("q", times), strict=True)
            if at < end:  # a line of another shape: parsed here
                nl = buf.find(b"\n", at, end)
                stop = end if nl == -1 else nl + 1
                yield parsed_own(read_for(host, [buf[at:stop]], "jsonl"), line, router,
                                 now, bound)
                at = stop
        if not chunk:
            return
        tail = buf[end:]
