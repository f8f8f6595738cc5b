"""The trigger record: one encoder, one decoder.

The Faust worker writes one record per trigger to its triggers topic;
``scenetrigger deliver`` and the journeys bridge read them. The record is
replay's four fields (``scene, user_id, key, ts``) plus ``trigger_id`` and
``fired_at_ms``, and the user's profile at fire time (``Profile.to_wire()``,
the state encoding's own) so a delivery process picks content without the
engine's state.

Decoding is strict: a record that cannot be used raises
:class:`MalformedRecord` with a reason code (a metric label). The profile is
checked field by field: segmentation does arithmetic on it, and one bad
record must not take a consumer down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from triggers.errors import SceneTriggerError
from triggers.events import Trigger
from triggers.profile import Profile

INVALID_JSON = "invalid_json"
BAD_FIELD = "bad_field"
BAD_PROFILE = "bad_profile"

# Profile wire positions by type (see Profile.to_wire); 14 to 16 came later.
_COUNTS = (0, 1, 2, 3, 4, 5, 12, 13)
_TIMES = (6, 7, 8)
_TEXTS = (9, 10, 14, 15, 16)
_HOURS = 11
_WIRE_MIN, _WIRE_MAX = 14, 22  # 17-21: cycle, engagement, dates (checked by Profile.from_wire)


class MalformedRecord(SceneTriggerError):
    """A record (trigger or action) that cannot be used; ``reason`` is stable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    trigger: Trigger
    profile: Profile | None  # None: a record from a worker that did not send it
    fired_at_ms: int | None = None


def trigger_record(trig: Trigger, fired_at_ms: int,
                   profile: Profile | None = None) -> dict[str, Any]:
    """The record as a JSON-ready dict."""
    record: dict[str, Any] = {"scene": trig.scene, "user_id": trig.user_id, "key": trig.key,
                              "ts": trig.ts, "trigger_id": trig.trigger_id,
                              "fired_at_ms": fired_at_ms}
    if profile is not None:
        record["profile"] = profile.to_wire()
    return record


def encode_trigger(trig: Trigger, fired_at_ms: int, profile: Profile | None = None) -> bytes:
    """The record's bytes on the triggers topic."""
    return orjson.dumps(trigger_record(trig, fired_at_ms, profile))


def decode_trigger(value: bytes | None) -> TriggerRecord:
    """The inverse of :func:`encode_trigger`; :class:`MalformedRecord` when unusable."""
    record = json_object(value)
    key = record.get("key")
    if key is not None and type(key) is not str:
        raise MalformedRecord(BAD_FIELD, "key is not a string")
    trigger = Trigger(text_field(record, "scene"), text_field(record, "user_id"), key,
                      int_field(record, "ts"))
    fired = record.get("fired_at_ms")
    wire = record.get("profile")
    return TriggerRecord(trigger, None if wire is None else profile_from_wire(wire),
                         fired if type(fired) is int else None)


def profile_from_wire(wire: Any) -> Profile:
    """``Profile.from_wire`` after checking every field's type."""
    if not isinstance(wire, list) or not _WIRE_MIN <= len(wire) <= _WIRE_MAX:
        raise MalformedRecord(BAD_PROFILE, f"profile is not a list of {_WIRE_MIN} to {_WIRE_MAX} fields")
    n = len(wire)
    problems = [i for i in _COUNTS if not _count(wire[i])]
    problems += [i for i in _TIMES if wire[i] is not None and type(wire[i]) is not int]
    problems += [i for i in _TEXTS if i < n and wire[i] is not None and type(wire[i]) is not str]
    hours = wire[_HOURS]
    if not (isinstance(hours, list) and len(hours) == 24 and all(map(_count, hours))):
        problems.append(_HOURS)
    if problems:
        raise MalformedRecord(BAD_PROFILE, f"profile fields {problems} have the wrong type")
    return Profile.from_wire(wire)


def json_object(value: bytes | None) -> dict[str, Any]:
    """A record's JSON object, or ``invalid_json``."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord(INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(record, dict):
        raise MalformedRecord(INVALID_JSON, "not a JSON object")
    return record


def text_field(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        raise MalformedRecord(BAD_FIELD, f"{name} is missing")
    return as_text(value, name)


def as_text(value: Any, name: str) -> str:
    if type(value) is not str or not value:
        raise MalformedRecord(BAD_FIELD, f"{name} is not a non-empty string")
    return value


def int_field(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if type(value) is not int:
        raise MalformedRecord(BAD_FIELD, f"{name} is not an integer")
    number: int = value
    return number


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0
