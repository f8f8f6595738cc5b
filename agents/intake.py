"""A collector request body split into events, in bounded memory and time.

The whole body is never parsed as one JSON value: an 8 MB array of 4 M
zeros used to become 4 M Python objects (and 4 M serialized rejections)
before the event limit was even checked, taking the process from 100 MB to
10 GB and the event loop for over a minute. Here a JSON array is split into
its items by a scanner that only looks at strings and brackets (C-speed
regular expression, one Python step per structural token), each item is
decoded on its own (``triggers.events.decode_event_line``: size, depth and
field rules), and the scan stops as soon as more than ``max_events`` items
are found. What is kept of a rejected item is capped at ``raw_limit`` bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agents.errors import AgentError
from triggers.errors import EventRejected
from triggers.events import (
    DEFAULT_ID_LIMITS,
    DEFAULT_MAX_LINE_BYTES,
    REASON_INVALID_JSON,
    Event,
    IdLimits,
    decode_event_line,
)

RAW_LIMIT = 4_096  # bytes of a rejected item kept for its dead letter
# A string (escapes included), a run of openers, a run of closers, a comma.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]+|[\]}]+|,', re.S)
_LINES = re.compile(rb"[^\n]+")


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str
    detail: str
    raw: bytes  # at most RAW_LIMIT bytes of the item

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "detail": self.detail}


class TooManyEvents(AgentError):
    """The body holds more than the event limit (the scan stopped there)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} events")
        self.limit = limit


def parse_body(body: bytes, ndjson: bool, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               max_events: int | None = None, ids: IdLimits = DEFAULT_ID_LIMITS,
               raw_limit: int = RAW_LIMIT) -> list[Event | Rejection]:
    """Split a body into events and rejections, in order. A body whose first
    non-blank byte is ``[`` is a JSON array unless the content type says NDJSON;
    anything else is NDJSON (one event object per line; blank lines skipped).
    Raises :class:`TooManyEvents` past ``max_events`` items."""
    return [item for _, item in parse_items(body, ndjson, max_line_bytes, max_events, ids,
                                            raw_limit)]


def parse_items(body: bytes, ndjson: bool, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                max_events: int | None = None, ids: IdLimits = DEFAULT_ID_LIMITS,
                raw_limit: int = RAW_LIMIT) -> list[tuple[int, Event | Rejection]]:
    """:func:`parse_body` with each item's index as the client counts it
    (array position, or NDJSON line number)."""
    items = _array_items(body) if not ndjson and body.lstrip()[:1] == b"[" else _lines(body)
    out: list[tuple[int, Event | Rejection]] = []
    limit = max_events if max_events is not None else -1
    for index, raw in items:
        if len(out) == limit:
            raise TooManyEvents(limit)
        if raw is None:  # not one JSON array: nothing of it is taken, as before
            return [(0, Rejection(0, REASON_INVALID_JSON, "not a JSON array (unbalanced "
                                  "brackets or text after it)", body[:raw_limit]))]
        try:
            out.append((index, decode_event_line(raw, max_line_bytes, ids)))
        except EventRejected as exc:
            out.append((index, Rejection(index, exc.reason, exc.detail, raw[:raw_limit])))
    return out


def _lines(body: bytes) -> Iterator[tuple[int, bytes | None]]:
    """NDJSON lines (without ``\\r``), numbered from 0, blank ones skipped."""
    line_no = 0
    last = 0
    for match in _LINES.finditer(body):
        line_no += body.count(b"\n", last, match.start())
        last = match.start()
        line = match.group().rstrip(b"\r")
        if line.strip():
            yield line_no, line


def _array_items(body: bytes) -> Iterator[tuple[int, bytes | None]]:
    """The items of a JSON array as byte slices, numbered from 0. An empty
    slot (``[1,,2]``) is yielded as it is (it fails to decode, as it should);
    a body that is not one balanced array ends with ``(index, None)``."""
    start = body.index(b"[") + 1
    depth = 0  # inside the current item
    item_start = start
    index = 0
    for match in _TOKENS.finditer(body, start):
        token = match.group()
        first = token[:1]
        if first == b'"':
            continue
        if first in (b"[", b"{"):
            depth += len(token)
        elif first == b",":
            if depth == 0:
                yield index, body[item_start:match.start()]
                index += 1
                item_start = match.end()
        elif depth >= len(token):
            depth -= len(token)
        else:  # this run closes the item, then the array itself
            end = match.start() + depth
            last = body[item_start:end]
            if index > 0 or last.strip():
                yield index, last
                index += 1
            if depth + 1 < len(token) or body[end + 1:].strip():
                yield index, None
            return
    yield index, None  # the array never closed


@dataclass(frozen=True, slots=True)
class Attempt:
    """What a request with an ``Idempotency-Key`` got stored so far."""

    digest: bytes  # of the body: a key reused with another body is refused
    stored: frozenset[int]  # positions of the request's messages Kafka stored
    answer: tuple[int, dict[str, Any]] | None  # the final answer, once all were stored


class IdempotencyConflict(AgentError):
    """The key was used before with a different body."""


class IdempotencyLedger:
    """The last ``limit`` idempotency keys (least recently used dropped),
    in this process: a retry after a collector restart sends everything again."""

    MAX_KEY_CHARS = 200

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = max(1, limit)
        self._attempts: OrderedDict[str, Attempt] = OrderedDict()

    @staticmethod
    def digest(body: bytes) -> bytes:
        return hashlib.blake2b(body, digest_size=16).digest()

    def get(self, key: str, digest: bytes) -> Attempt | None:
        found = self._attempts.get(key)
        if found is None:
            return None
        if not hmac.compare_digest(found.digest, digest):
            raise IdempotencyConflict(key)
        self._attempts.move_to_end(key)
        return found

    def put(self, key: str, attempt: Attempt) -> None:
        self._attempts[key] = attempt
        self._attempts.move_to_end(key)
        while len(self._attempts) > self._limit:
            self._attempts.popitem(last=False)
