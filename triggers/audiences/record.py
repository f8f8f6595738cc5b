"""The audience membership change: the one record the engine side writes and
the ad-platform side (channels/ads/) reads (docs/ads.md, "The record").

On Kafka: topic ``PREFIX.audiences`` (compacted), key the UTF-8 bytes of
``f"{audience}|{user_id}"`` (:func:`change_key`), value orjson of
``{"audience", "user_id", "op": "enter"|"exit", "ts" (event-time seconds),
"reason"}`` (:func:`encode_change`). In replay and embedded output the same
fields as one JSON line with ``"kind": "audience"`` first
(:func:`audience_line`), apart from the trigger lines. Decoding is strict:
:class:`AudienceRecordError` names what is wrong.

An erasure deletes the user's keys: a tombstone (null value) per
``audience|user_id`` key, after the exits, so compaction keeps nothing of
the user. A topic reader gets it as an :class:`AudienceTombstone`
(:func:`decode_topic_record`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from triggers.errors import SceneTriggerError

SUFFIX = "audiences"  # the topic is PREFIX.audiences
SHARED_TOPIC = "scenetrigger-audiences"  # without a prefix, as the other shared names
KIND = "audience"  # the "kind" field of a replay output line
ENTER: Literal["enter"] = "enter"
EXIT: Literal["exit"] = "exit"
OPS = (ENTER, EXIT)
Op = Literal["enter", "exit"]
# Why a membership changed.
REASON_CONDITION = "condition"  # the audience's conditions started (or stopped) holding
REASON_PURCHASE = "purchase"  # a purchase ended a "did not buy" condition
REASON_EXPIRED = "expired"  # a window ran out on the clock
REASON_CONSENT = "consent"  # the ads purpose was withdrawn (the delivery side)
REASON_ERASED = "erased"  # the user was erased (the delivery side)
REASON_JOURNEY = "journey"  # a journey's audience step
REASONS = (REASON_CONDITION, REASON_PURCHASE, REASON_EXPIRED, REASON_CONSENT, REASON_ERASED,
           REASON_JOURNEY)
FIELDS = ("audience", "user_id", "op", "ts", "reason")


class AudienceRecordError(SceneTriggerError):
    """A value on the audiences topic (or a replay line) that is not a change."""


@dataclass(frozen=True, slots=True)
class AudienceChange:
    """``user_id`` entered (or left) ``audience`` at ``ts`` (event-time
    seconds: the milliseconds of the engine divided by 1000)."""

    audience: str
    user_id: str
    op: Op
    ts: float
    reason: str

    @classmethod
    def at(cls, audience: str, user_id: str, op: Op, ts_ms: int, reason: str) -> AudienceChange:
        return cls(audience, user_id, op, ts_ms / 1000, reason)

    @property
    def key(self) -> bytes:
        return change_key(self.audience, self.user_id)

    def to_dict(self) -> dict[str, Any]:
        return {"audience": self.audience, "user_id": self.user_id, "op": self.op,
                "ts": self.ts, "reason": self.reason}


def change_key(audience: str, user_id: str) -> bytes:
    """The compaction key: the latest change per audience and user is kept."""
    return f"{audience}|{user_id}".encode()


@dataclass(frozen=True, slots=True)
class AudienceTombstone:
    """A deleted key of the topic (a null value, written on erasure): the
    user is in none of ``audience``, and a reader keeps nothing of them
    under this key."""

    audience: str
    user_id: str

    @property
    def key(self) -> bytes:
        return change_key(self.audience, self.user_id)

    def as_exit(self, ts: float) -> AudienceChange:
        """The exit it stands for (for readers that act on exits: the ad sync)."""
        return AudienceChange(self.audience, self.user_id, EXIT, ts, REASON_ERASED)


def split_key(key: bytes) -> tuple[str, str]:
    """``(audience, user_id)`` of a topic key (an audience name has no ``|``)."""
    audience, bar, user_id = key.decode(errors="replace").partition("|")
    if not bar or not audience or not user_id:
        raise AudienceRecordError(f"key {key!r} is not 'audience|user_id'")
    return audience, user_id


def decode_topic_record(key: bytes | None, value: bytes | None
                        ) -> AudienceChange | AudienceTombstone:
    """A record of ``PREFIX.audiences``: a change (its key, when given, must
    agree with it) or, for a null value, the tombstone of its key."""
    if value is None:
        if key is None:
            raise AudienceRecordError("a null value without a key")
        return AudienceTombstone(*split_key(key))
    change = decode_change(value)
    if key is not None and key != change.key:
        raise AudienceRecordError(f"key {key!r} does not match {change.key!r}")
    return change


def encode_change(change: AudienceChange) -> bytes:
    return orjson.dumps(change.to_dict())


def audience_line(change: AudienceChange) -> bytes:
    """The replay/embedded output line (with its newline)."""
    return orjson.dumps({"kind": KIND, **change.to_dict()}) + b"\n"


def decode_change(value: bytes | str | dict[str, Any]) -> AudienceChange:
    """A topic value (or a parsed replay line; its ``kind`` must be
    ``audience``) as a change, or :class:`AudienceRecordError`."""
    if isinstance(value, dict):
        obj: Any = value
    else:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise AudienceRecordError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AudienceRecordError(f"not an object: {type(obj).__name__}")
    extra = set(obj) - set(FIELDS) - {"kind"}
    if extra:
        raise AudienceRecordError(f"unknown fields {sorted(extra)}")
    if "kind" in obj and obj["kind"] != KIND:
        raise AudienceRecordError(f"kind is {obj['kind']!r}, not {KIND!r}")
    for name in ("audience", "user_id", "reason"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise AudienceRecordError(f"{name!r} must be a non-empty string")
    if obj.get("op") not in OPS:
        raise AudienceRecordError(f"'op' must be 'enter' or 'exit', not {obj.get('op')!r}")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise AudienceRecordError(f"'ts' must be a number of seconds, not {ts!r}")
    return AudienceChange(obj["audience"], obj["user_id"], obj["op"], float(ts), obj["reason"])
