"""The audience membership record (enter / exit), as the engine writes it on
the compacted topic ``PREFIX.audiences`` (key ``"{audience}|{user_id}"``)
and in replay output (a line with ``"kind": "audience"``).

A small decoder of our own so this package needs nothing of the producer's;
the shape is the contract: ``{"audience", "user_id", "op": "enter"|"exit",
"ts": seconds, "reason"}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from channels.errors import ChannelError

Op = Literal["enter", "exit"]
KIND = "audience"  # a replay output line's kind


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
    audience, user, op = data.get("audience"), data.get("user_id"), data.get("op")
    ts, reason = data.get("ts"), data.get("reason", "")
    if not isinstance(audience, str) or not audience:
        raise MembershipError("audience: want a non-empty string")
    if not isinstance(user, str) or not user:
        raise MembershipError("user_id: want a non-empty string")
    if op not in ("enter", "exit"):
        raise MembershipError(f"op: want enter or exit, got {op!r}")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise MembershipError("ts: want a number of seconds")
    if not isinstance(reason, str):
        raise MembershipError("reason: want a string")
    return Membership(audience, user, op, float(ts), reason)


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
