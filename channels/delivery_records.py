"""Decoding what ``scenetrigger deliver`` consumes: trigger records of the
worker's triggers topic (``agents.app.trigger_record``) and journey actions
(``strategies.actions.action_to_dict`` of :mod:`channels.orders`). Pure functions; a record that cannot
be used raises :class:`MalformedRecord` with a reason code for the metric.

A trigger record's ``profile`` is ``Profile.to_wire()`` of the user at fire
time. It is checked field by field here: segmentation does arithmetic on
it, and one bad record must not take the consumer down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from channels.orders import HandoffAction, SendAction
from triggers.events import Trigger
from triggers.profile import Profile
from triggers.state import UserState

INVALID_JSON = "invalid_json"
BAD_FIELD = "bad_field"
BAD_PROFILE = "bad_profile"
UNKNOWN_KIND = "unknown_kind"

# Profile wire positions by type (see Profile.to_wire); 14 and 15 came later.
_COUNTS = (0, 1, 2, 3, 4, 5, 12, 13)
_TIMES = (6, 7, 8)
_TEXTS = (9, 10, 14, 15)
_HOURS = 11
_WIRE_MIN, _WIRE_MAX = 14, 16


class MalformedRecord(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    trigger: Trigger
    profile: Profile | None  # None: a record from a worker that did not send it


def decode_trigger(value: bytes | None) -> TriggerRecord:
    record = _object(value)
    key = record.get("key")
    if key is not None and type(key) is not str:
        raise MalformedRecord(BAD_FIELD, "key is not a string")
    trigger = Trigger(_text(record, "scene"), _text(record, "user_id"), key, _int(record, "ts"))
    wire = record.get("profile")
    return TriggerRecord(trigger, None if wire is None else profile_from_wire(wire))


Action = SendAction | HandoffAction


def decode_action(value: bytes | None) -> Action:
    """A ``send`` or ``handoff`` record of the journey-actions topic."""
    record = _object(value)
    kind = record.get("kind")
    user, channel = _text(record, "user_id"), _text(record, "channel")
    ref, message_id, ts = _text(record, "content_ref"), _text(record, "message_id"), _int(
        record, "ts")
    if kind == "send":
        trigger_id = record.get("trigger_id")
        version = record.get("version", 1)
        if type(version) is not int:
            raise MalformedRecord(BAD_FIELD, "version is not an integer")
        return SendAction(user, channel, ref, _text(record, "strategy"), _text(record, "step"),
                          message_id, ts, version,
                          None if trigger_id is None else _as_text(trigger_id, "trigger_id"))
    if kind == "handoff":
        score = record.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise MalformedRecord(BAD_FIELD, "score is not a number")
        return HandoffAction(user, float(score), channel, ref, message_id, ts)
    raise MalformedRecord(UNKNOWN_KIND, f"action kind {str(kind)[:40]!r}")


def profile_from_wire(wire: Any) -> Profile:
    """``Profile.from_wire`` after checking every field's type."""
    if not isinstance(wire, list) or not _WIRE_MIN <= len(wire) <= _WIRE_MAX:
        raise MalformedRecord(BAD_PROFILE, "profile is not a list of 14 to 16 fields")
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


def state_with(profile: Profile) -> UserState:
    """A user state holding only ``profile``: all that content selection reads."""
    state = UserState()
    state.profile = profile
    return state


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _object(value: bytes | None) -> dict[str, Any]:
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord(INVALID_JSON, str(exc)[:200]) from None
    if not isinstance(record, dict):
        raise MalformedRecord(INVALID_JSON, "not a JSON object")
    return record


def _text(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        raise MalformedRecord(BAD_FIELD, f"{name} is missing")
    return _as_text(value, name)


def _as_text(value: Any, name: str) -> str:
    if type(value) is not str or not value:
        raise MalformedRecord(BAD_FIELD, f"{name} is not a non-empty string")
    return value


def _int(record: dict[str, Any], name: str) -> int:
    value = record.get(name)
    if type(value) is not int:
        raise MalformedRecord(BAD_FIELD, f"{name} is not an integer")
    value_int: int = value
    return value_int
