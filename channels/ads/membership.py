"""The audience membership record (enter / exit), as the engine writes it on
the compacted topic ``PREFIX.audiences`` (key ``"{audience}|{user_id}"``)
and in replay output (a line with ``"kind": "audience"``).

The shape is the engine's contract (:mod:`triggers.audiences.record`,
decoded by its strict ``decode_change``): ``{"audience", "user_id", "op":
"enter"|"exit", "ts": seconds, "reason"}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from channels.errors import ChannelError
from triggers.audiences.record import KIND, AudienceRecordError, decode_change

Op = Literal["enter", "exit"]


class MembershipError(ChannelError):
    """A membership record that cannot be read (the message says why)."""


@dataclass(frozen=True, slots=True)
class Membership:
    audience: str
    user_id: str
    op: Op
    ts: float  # seconds
    reason: str = ""

    @property
    def key(self) -> str:
        return f"{self.audience}|{self.user_id}"


def from_mapping(data: Mapping[str, Any]) -> Membership:
    """The engine's record (triggers/audiences/record.py, the one contract),
    checked by its own strict decoder."""
    try:
        change = decode_change(dict(data))
    except AudienceRecordError as exc:
        raise MembershipError(str(exc)) from None
    return Membership(change.audience, change.user_id, change.op, change.ts, change.reason)


def decode_record(key: bytes | None, value: bytes | None) -> Membership | None:
    """A topic record; None for a tombstone (compaction's delete marker).
    The key must agree with the value."""
    if value is None:
        return None
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MembershipError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MembershipError("want a JSON object")
    found = from_mapping(data)
    if key is not None and key.decode(errors="replace") != found.key:
        raise MembershipError(f"key {key!r} does not match {found.key!r}")
    return found


def read_jsonl(lines: Iterator[bytes]) -> Iterator[tuple[int, Membership | MembershipError]]:
    """(line number, record or its error) of every ``"kind": "audience"``
    line of a replay output; other kinds are skipped."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield number, MembershipError(f"not JSON: {exc}")
            continue
        if not isinstance(data, dict) or data.get("kind") != KIND:
            continue
        try:
            yield number, from_mapping(data)
        except MembershipError as exc:
            yield number, exc
