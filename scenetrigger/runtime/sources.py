"""Input readers: JSONL events and the ``rees46`` / ``otto`` presets of SEMANTICS.md.

Each reader yields ``(line_number, Event | EventRejected)`` in input order, so a
bad line is reported with its number and never stops the stream.
:func:`open_input` opens a path (or stdin) for them and :func:`pick_format`
detects its format: for every command, the console and the demo.
"""

from __future__ import annotations

import calendar
import contextlib
import csv
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Literal, cast

import orjson

from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import (
    DEFAULT_ID_LIMITS,
    DEFAULT_MAX_LINE_BYTES,
    MIN_DEEP_BYTES,
    REASON_INVALID_UTF8,
    REASON_MISSING_FIELD,
    REASON_NOT_OBJECT,
    REASON_TOO_LARGE,
    REASON_WRONG_TYPE,
    Event,
    IdLimits,
    check_depth,
    decode_event_line,
    event_from_mapping,
    json_rejection,
)
from triggers.host import EngineHost
from triggers.host import Record as Record  # the readers yield these

Format = Literal["jsonl", "rees46", "otto"]
FORMATS: tuple[str, ...] = ("auto", "jsonl", "rees46", "otto")

REES46_HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
)
_TS_MIN, _TS_MAX = -(1 << 63), (1 << 63) - 1  # else the careful path rejects it
OTTO_TYPES = {"clicks": "view", "carts": "cart", "orders": "purchase"}


def detect_format(first_line: bytes, name: str | None = None) -> Format:
    """Pick a reader by the file name and its first line."""
    head = first_line.lstrip(b"\xef\xbb\xbf").strip()
    if head.decode("utf-8", "replace") == REES46_HEADER or (name or "").endswith(".csv"):
        return "rees46"
    if head.startswith(b"{"):
        try:
            obj = orjson.loads(head)
        except orjson.JSONDecodeError:
            return "jsonl"
        if isinstance(obj, dict) and "session" in obj and "events" in obj:
            return "otto"
    return "jsonl"


def read_events(
    stream: Iterable[bytes], fmt: Format, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ids: IdLimits = DEFAULT_ID_LIMITS,
) -> Iterator[Record]:
    if fmt == "jsonl":
        return read_jsonl(stream, max_line_bytes, ids)
    if fmt == "rees46":
        return read_rees46(stream, max_line_bytes, ids)
    return read_otto(stream, max_line_bytes, ids)


def read_for(host: EngineHost, stream: Iterable[bytes], fmt: Format) -> Iterator[Record]:
    """``read_events`` with the host's input rules (line size, identifier limits)."""
    return read_events(stream, fmt, host.rules.max_line_bytes, host.ids)


def read_jsonl(stream: Iterable[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               ids: IdLimits = DEFAULT_ID_LIMITS) -> Iterator[Record]:
    """The hot path of replay: a line that parses to an object with a string
    ``user_id``, an integer ``ts`` and a string ``type`` (and identifiers
    within their limit) becomes an event at once; anything else takes the
    careful path that says why it is rejected."""
    limit, per = ids.max_chars, ids.per_fields
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    new_event = tuple.__new__  # Event(...) without its Python-level __new__
    ts_min, ts_max = _TS_MIN, _TS_MAX
    min_deep = MIN_DEEP_BYTES
    number = 0
    for raw in stream:
        number += 1
        if len(raw) <= max_line_bytes:  # the newline counts here; the exact check is below
            try:
                obj = loads(raw)  # JSON whitespace: a trailing \r\n is fine
            except decode_error:
                pass
            else:
                if len(raw) >= min_deep:  # rare: a long line may nest too deep
                    try:
                        check_depth(raw, obj)
                    except EventRejected as exc:
                        yield number, exc
                        continue
                if type(obj) is dict:
                    try:  # subscripts: cheaper than .get calls; a missing key is rare
                        user, ts, etype = obj["user_id"], obj["ts"], obj["type"]
                    except KeyError:
                        user = None
                    if (type(user) is str and type(ts) is int and type(etype) is str
                            and ts_min <= ts <= ts_max and len(user) <= limit):
                        # per values: a short string, an integer (engine.max_id_chars
                        # >= 20 fits any 64-bit one) or absent; else the careful path
                        for name in per:
                            value = obj.get(name)
                            kind = type(value)
                            if kind is str:
                                if len(value) > limit:  # type: ignore[arg-type]
                                    break
                            elif value is not None and kind is not int:
                                break
                        else:
                            yield number, new_event(Event, (user, ts, etype, obj))
                            continue
                try:
                    yield number, event_from_mapping(obj, ids)
                except EventRejected as exc:
                    yield number, exc
                continue
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue  # blank lines separate nothing and carry nothing
        try:
            yield number, decode_event_line(line, max_line_bytes, ids)
        except EventRejected as exc:
            yield number, exc


def read_otto(stream: Iterable[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
              ids: IdLimits = DEFAULT_ID_LIMITS) -> Iterator[Record]:
    """``{"session": N, "events": [{"aid", "ts", "type"}]}``: one user per session."""
    for number, raw in enumerate(stream, 1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        if len(line) > max_line_bytes:
            yield number, EventRejected(
                REASON_TOO_LARGE, f"line is {len(line)} bytes, the limit is {max_line_bytes}"
            )
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, json_rejection(line, exc)
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("events"), list):
            yield number, EventRejected(REASON_NOT_OBJECT, "expected {session, events: [...]}")
            continue
        session = obj.get("session")
        for item in obj["events"]:
            yield number, _otto_event(session, item, ids)


def _otto_event(session: Any, item: Any, ids: IdLimits) -> Event | EventRejected:
    if not isinstance(item, dict):
        return EventRejected(REASON_NOT_OBJECT, "an OTTO event must be an object")
    otto_type = item.get("type")
    mapped = OTTO_TYPES.get(otto_type) if isinstance(otto_type, str) else None
    if mapped is None:
        return EventRejected(REASON_WRONG_TYPE, f"unknown OTTO event type {otto_type!r}")
    fields: dict[str, Any] = {"user_id": session, "ts": item.get("ts"), "type": mapped}
    aid = item.get("aid")
    if aid is not None:
        if type(aid) is not int and type(aid) is not str:  # str() of a bool or object is no id
            return EventRejected(REASON_WRONG_TYPE,
                                 f"aid must be an integer or a string, not {type(aid).__name__}")
        fields["product_id"] = str(aid)
    try:
        return event_from_mapping(fields, ids)
    except EventRejected as exc:
        return exc


def read_rees46(
    stream: Iterable[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ids: IdLimits = DEFAULT_ID_LIMITS,
) -> Iterator[Record]:
    """The REES46 CSV preset. Empty ``category_code`` is absent; other cells are
    kept as strings (CSV has no null), exactly as SEMANTICS.md maps them."""
    times = _Rees46Clock()
    for number, raw in enumerate(stream, 1):
        if len(raw) > max_line_bytes + 2:
            yield number, EventRejected(
                REASON_TOO_LARGE, f"line is {len(raw)} bytes, the limit is {max_line_bytes}"
            )
            continue
        try:
            line = raw.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield number, EventRejected(REASON_INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}")
            continue
        if number == 1 and line == REES46_HEADER:
            continue
        if not line.strip():
            continue
        try:
            row = next(csv.reader([line]))
        except csv.Error as exc:  # e.g. a stray \r inside the line: reject, never stop
            yield number, EventRejected(REASON_WRONG_TYPE, f"malformed CSV row: {exc}")
            continue
        yield number, _rees46_event(row, times, ids)


class _Rees46Clock:
    """``2019-10-01 00:00:00 UTC`` -> ms, caching the last second (events are dense)."""

    def __init__(self) -> None:
        self._last_text = ""
        self._last_ms = 0

    def parse(self, text: str) -> int:
        if text == self._last_text:
            return self._last_ms
        if len(text) != 23 or not text.endswith(" UTC"):
            raise ValueError(f"bad event_time {text!r}: expected 'YYYY-MM-DD HH:MM:SS UTC'")
        try:
            fields = (int(text[0:4]), int(text[5:7]), int(text[8:10]),
                      int(text[11:13]), int(text[14:16]), int(text[17:19]))
        except ValueError:
            raise ValueError(f"bad event_time {text!r}") from None
        ms = calendar.timegm((*fields, 0, 0, 0)) * 1000
        self._last_text, self._last_ms = text, ms
        return ms


def _rees46_event(row: list[str], times: _Rees46Clock, ids: IdLimits) -> Event | EventRejected:
    if len(row) != 9:
        return EventRejected(REASON_WRONG_TYPE, f"expected 9 CSV columns, got {len(row)}")
    event_time, event_type, product_id, category_id, category_code, brand, price, user, sess = row
    if not user:
        return EventRejected(REASON_MISSING_FIELD, "user_id is missing")
    if not event_type:
        return EventRejected(REASON_MISSING_FIELD, "event_type is missing")
    try:
        ts = times.parse(event_time)
    except ValueError as exc:
        return EventRejected(REASON_WRONG_TYPE, str(exc))
    fields: dict[str, Any] = {
        "user_id": user,
        "ts": ts,
        "type": event_type,
        "product_id": product_id,
        "category_id": category_id,
        "brand": brand,
        "price": price,
        "session_id": sess,
    }
    if category_code:
        fields["category"] = category_code
    try:
        ids.check(user, fields)
    except EventRejected as exc:
        return exc
    return Event(user, ts, event_type, fields)


def pick_format(requested: str, stream: Any, name: str) -> tuple[Format, Iterable[bytes]]:
    """The format to read, and the lines to read it from (the first line,
    read to detect the format, is put back in front)."""
    if requested != "auto":
        return cast(Format, requested), stream
    first = stream.readline()
    return detect_format(first, name), itertools.chain([first], stream)


@contextlib.contextmanager
def open_input(path: str) -> Iterator[tuple[Any, int | None]]:
    """The binary stream of ``path`` (``-``: stdin) and its size when known."""
    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        fh = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SceneTriggerError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size
