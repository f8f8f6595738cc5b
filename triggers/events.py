"""Events, triggers and the strict decoding of one JSON line into an event."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from triggers.errors import EventRejected
from triggers.predicates import as_compared_string

DEFAULT_MAX_LINE_BYTES = 1 << 20
DEFAULT_MAX_ID_CHARS = 256
_U64_MAX = (1 << 64) - 1
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

# Stable reason codes: metric labels and dead-letter records use them.
REASON_TOO_LARGE = "too_large"
REASON_INVALID_UTF8 = "invalid_utf8"
REASON_INVALID_JSON = "invalid_json"
REASON_NOT_OBJECT = "not_object"
REASON_MISSING_FIELD = "missing_field"
REASON_WRONG_TYPE = "wrong_type"
REASON_TOO_LONG = "too_long"
REASON_TOO_DEEP = "too_deep"
# The event type that erases a user: the worker deletes their state, the
# journeys service their positions (scenetrigger erase, docs/audiences.md).
ERASE = "erase"
REASON_FUTURE_TS = "future_ts"  # ts too far ahead of the wall clock (triggers.host.check_future)
# orjson reads JSON nested 1024 levels deep but writes only 254: an event
# (the object itself is a level) nested deeper could not be produced again.
MAX_DEPTH = 254
REASONS = (
    REASON_TOO_LARGE,
    REASON_INVALID_UTF8,
    REASON_INVALID_JSON,
    REASON_NOT_OBJECT,
    REASON_MISSING_FIELD,
    REASON_WRONG_TYPE,
    REASON_TOO_LONG,
    REASON_TOO_DEEP,
    REASON_FUTURE_TS,
)


@dataclass(frozen=True, slots=True)
class IdLimits:
    """Identifiers become state and Redis keys, so their length is bounded:
    ``user_id`` and the value of every field a scene uses as ``per`` (as the
    string it is compared as) may have at most ``max_chars`` characters."""

    max_chars: int = DEFAULT_MAX_ID_CHARS
    per_fields: tuple[str, ...] = ()

    @classmethod
    def of(cls, max_chars: int, scenes: Iterable[Any]) -> IdLimits:
        """The limits for a scene list (each scene's ``per``, if it has one)."""
        fields = dict.fromkeys(p for s in scenes if (p := getattr(s, "per", None)) is not None)
        return cls(max_chars, tuple(fields))

    def check(self, user_id: str, fields: Mapping[str, Any]) -> None:
        """Raise ``too_long`` for an identifier over the limit."""
        limit = self.max_chars
        if len(user_id) > limit:
            raise EventRejected(REASON_TOO_LONG,
                                f"user_id has {len(user_id)} characters, the limit is {limit}")
        for name in self.per_fields:
            value = fields.get(name)
            if value is None:
                continue
            text = value if type(value) is str else as_compared_string(value)
            if text is not None and len(text) > limit:
                raise EventRejected(
                    REASON_TOO_LONG,
                    f"{name} (a per key) has {len(text)} characters, the limit is {limit}")


DEFAULT_ID_LIMITS = IdLimits()


class Event(NamedTuple):
    """One clickstream event. ``fields`` holds every field of the input,
    including ``type``, so predicates can look any of them up by name.

    A named tuple: immutable, and the cheapest such object to build (a
    frozen dataclass took three times as long, about 10% of a replay, which
    builds one per line)."""

    user_id: str
    ts: int
    type: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Trigger:
    """A scene that fired for a user. ``ts`` is event time: the event's ``ts``
    for repeat/arrival, the deadline for absence."""

    scene: str
    user_id: str
    key: str | None
    ts: int

    @property
    def trigger_id(self) -> str:
        """Deterministic id: the same trigger replayed or retried has the same id,
        so deliveries can be deduplicated downstream."""
        key = "" if self.key is None else self.key
        return f"{self.scene}|{self.user_id}|{len(key)}:{key}|{self.ts}"

    def to_dict(self) -> dict[str, Any]:
        return {"scene": self.scene, "user_id": self.user_id, "key": self.key, "ts": self.ts}


REFUSED_USER_FILTER = "user_filter"  # a Refusal's rule: the scene's `user:` filter
REFUSED_BUDGET = "trigger_budget"  # engine.max_triggers_per_user (triggers.budget)


class Refusal(NamedTuple):  # a tuple: cheap to build where the engine refuses
    """A scene that would have fired but its ``user:`` filter refused: the
    filter as configured (``tags_all {a}; segments {vip}``) and the tags the
    user's profile had then, of those the filter looks at. Or (``rule``
    :data:`REFUSED_BUDGET`) the user's trigger budget was spent: ``filter``
    is the budget (``20 within 1h``)."""

    scene: str
    user_id: str
    key: str | None
    ts: int
    filter: str
    had: tuple[str, ...]
    rule: str = REFUSED_USER_FILTER

    def text(self) -> str:
        if self.rule == REFUSED_BUDGET:
            return f"trigger budget spent: {self.filter} per user"
        had = ", ".join(self.had) or "none"
        return f"user filter {self.filter}; the profile had {had}"


def decode_user_id(value: Any) -> str:
    """A user id is a string, or an integer read as its decimal string."""
    if value is None:
        raise EventRejected(REASON_MISSING_FIELD, "user_id is missing")
    if type(value) is str:
        return value
    if type(value) is int:
        if value < _I64_MIN or value > _U64_MAX:
            raise EventRejected(REASON_WRONG_TYPE, "user_id is an integer beyond 64 bits")
        return str(value)
    if type(value) is float and value.is_integer() and abs(value) > _U64_MAX // 2:
        # orjson reads an integer beyond 64 bits as a float
        raise EventRejected(REASON_WRONG_TYPE, "user_id is an integer beyond 64 bits")
    raise EventRejected(
        REASON_WRONG_TYPE, f"user_id must be a string or an integer, not {_json_type(value)}"
    )


def event_from_mapping(obj: Any, ids: IdLimits = DEFAULT_ID_LIMITS) -> Event:
    """Validate a decoded JSON value as an event (the rules of SEMANTICS.md;
    identifier lengths are checked last, after every field's presence and type)."""
    if type(obj) is not dict:
        raise EventRejected(REASON_NOT_OBJECT, f"expected a JSON object, got {_json_type(obj)}")
    ts = obj.get("ts")
    etype = obj.get("type")
    user_id = decode_user_id(obj.get("user_id"))
    if ts is None:
        raise EventRejected(REASON_MISSING_FIELD, "ts is missing")
    if type(ts) is not int:
        raise EventRejected(REASON_WRONG_TYPE, f"ts must be an integer, not {_json_type(ts)}")
    if ts < _I64_MIN or ts > _I64_MAX:
        # ts + after must stay a 64-bit integer (state is encoded with orjson)
        raise EventRejected(REASON_WRONG_TYPE, "ts is an integer beyond signed 64 bits")
    if etype is None:
        raise EventRejected(REASON_MISSING_FIELD, "type is missing")
    if type(etype) is not str:
        raise EventRejected(REASON_WRONG_TYPE, f"type must be a string, not {_json_type(etype)}")
    ids.check(user_id, obj)
    return Event(user_id, ts, etype, obj)


def decode_event_line(line: bytes, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                      ids: IdLimits = DEFAULT_ID_LIMITS) -> Event:
    """Decode one JSONL line (without its newline) into an event, or raise
    :class:`EventRejected` with a stable reason."""
    if len(line) > max_line_bytes:
        raise EventRejected(
            REASON_TOO_LARGE, f"line is {len(line)} bytes, the limit is {max_line_bytes}"
        )
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise json_rejection(line, exc) from None
    check_depth(line, obj)
    return event_from_mapping(obj, ids)


# A value nested MAX_DEPTH + 1 deep needs that many opening and closing brackets.
MIN_DEEP_BYTES = 2 * (MAX_DEPTH + 1)
TOO_DEEP_DETAIL = f"nested more than {MAX_DEPTH} levels deep (the most orjson writes)"


def check_depth(raw: bytes, obj: Any) -> None:
    """Raise ``too_deep`` if ``obj`` (decoded from ``raw``) nests deeper than
    :data:`MAX_DEPTH`. Cheap for every ordinary line: a short one cannot, and
    one with few brackets cannot (counting them is C speed)."""
    if (len(raw) >= MIN_DEEP_BYTES and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
            and too_deep(obj)):
        raise EventRejected(REASON_TOO_DEEP, TOO_DEEP_DETAIL)


# Events one Kafka record may carry (the worker's per-user offset guard keeps
# an event's index in its record in 16 bits).
MAX_EVENTS_PER_RECORD = 1 << 16


def decode_event_record(value: bytes, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                        ids: IdLimits = DEFAULT_ID_LIMITS) -> list[Event | EventRejected]:
    """The events of one Kafka record, in order, each decoded or rejected alone.

    A record is one event (a JSON object: what any producer keyed by
    ``user_id`` writes) or a batch (a JSON array of event objects: what the
    collector and ``scenetrigger produce`` write). An array that does not
    parse is one rejection; events past ``MAX_EVENTS_PER_RECORD`` are
    rejected as ``too_large``.
    """
    if value[:1] != b"[":
        try:
            return [decode_event_line(value, max_line_bytes, ids)]
        except EventRejected as exc:
            return [exc]
    try:
        items = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return [json_rejection(value, exc)]
    out: list[Event | EventRejected] = []
    deep = len(value) >= MIN_DEEP_BYTES and value.count(b"[") + value.count(b"{") > MAX_DEPTH
    for index, item in enumerate(items):
        if index >= MAX_EVENTS_PER_RECORD:
            out.append(EventRejected(
                REASON_TOO_LARGE, f"a record holds at most {MAX_EVENTS_PER_RECORD} events"))
            continue
        try:
            if deep and too_deep(item):  # an event of a batch: one level below the record
                raise EventRejected(REASON_TOO_DEEP, TOO_DEEP_DETAIL)
            out.append(event_from_mapping(item, ids))
        except EventRejected as exc:
            out.append(exc)
    return out


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True if ``value`` nests lists and objects more than ``limit`` levels
    (``value`` itself is level 1); no recursion, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if type(item) is dict else item if type(item) is list else ()
        stack.extend((child, depth + 1) for child in children
                     if type(child) is dict or type(child) is list)
    return False


def json_rejection(line: bytes, exc: orjson.JSONDecodeError) -> EventRejected:
    """Why a line failed to parse: bad UTF-8 or bad JSON."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as uexc:
        return EventRejected(REASON_INVALID_UTF8, f"invalid UTF-8 at byte {uexc.start}")
    return EventRejected(REASON_INVALID_JSON, str(exc))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
