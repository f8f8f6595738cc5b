"""Decoding what ``scenetrigger deliver`` consumes: trigger records of the
worker's triggers topic (:mod:`triggers.wire`, the record's one encoder and
decoder) and journey actions (``action_to_dict`` of :mod:`channels.orders`).
Pure functions; a record that cannot be used raises :class:`MalformedRecord` with
a reason code for the metric.
"""

from __future__ import annotations

from channels.orders import HandoffAction, SendAction
from triggers.profile import Profile
from triggers.state import UserState
from triggers.wire import (
    BAD_FIELD,
    BAD_PROFILE,
    INVALID_JSON,
    MalformedRecord,
    TriggerRecord,
    as_text,
    decode_trigger,
    int_field,
    json_object,
    profile_from_wire,
    text_field,
)

UNKNOWN_KIND = "unknown_kind"

__all__ = [
    "BAD_FIELD",
    "BAD_PROFILE",
    "INVALID_JSON",
    "UNKNOWN_KIND",
    "Action",
    "MalformedRecord",
    "TriggerRecord",
    "decode_action",
    "decode_trigger",
    "profile_from_wire",
    "state_with",
]

Action = SendAction | HandoffAction


def decode_action(value: bytes | None) -> Action:
    """A ``send`` or ``handoff`` record of the journey-actions topic."""
    record = json_object(value)
    kind = record.get("kind")
    user, channel = text_field(record, "user_id"), text_field(record, "channel")
    ref, message_id, ts = (text_field(record, "content_ref"), text_field(record, "message_id"),
                           int_field(record, "ts"))
    if kind == "send":
        trigger_id = record.get("trigger_id")
        version = record.get("version", 1)
        if type(version) is not int:
            raise MalformedRecord(BAD_FIELD, "version is not an integer")
        return SendAction(user, channel, ref, text_field(record, "strategy"),
                          text_field(record, "step"), message_id, ts, version,
                          None if trigger_id is None else as_text(trigger_id, "trigger_id"))
    if kind == "handoff":
        score = record.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise MalformedRecord(BAD_FIELD, "score is not a number")
        return HandoffAction(user, float(score), channel, ref, message_id, ts)
    raise MalformedRecord(UNKNOWN_KIND, f"action kind {str(kind)[:40]!r}")


def state_with(profile: Profile) -> UserState:
    """A user state holding only ``profile``: all that content selection reads."""
    state = UserState()
    state.profile = profile
    return state
