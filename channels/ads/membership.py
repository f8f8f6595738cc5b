"""Reading audience membership records on the ad-platform side: the engine's
:class:`triggers.audiences.record.AudienceChange` (the one type and its
strict decoder), from the compacted topic ``PREFIX.audiences`` (key
``"{audience}|{user_id}"``; a null value is an erasure's tombstone) and
from replay output (lines with ``"kind": "audience"``). Errors are
:class:`MembershipError`, a channel error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from channels.errors import ChannelError
from triggers.audiences.record import (
    KIND,
    AudienceChange,
    AudienceRecordError,
    AudienceTombstone,
    decode_change,
    decode_topic_record,
)


class MembershipError(ChannelError):
    """A membership record that cannot be read (the message says why)."""


def from_mapping(data: Mapping[str, Any]) -> AudienceChange:
    """The engine's record, checked by its own strict decoder."""
    try:
        return decode_change(dict(data))
    except AudienceRecordError as exc:
        raise MembershipError(str(exc)) from None


def decode_record(key: bytes | None, value: bytes | None
                  ) -> AudienceChange | AudienceTombstone:
    """A topic record: a change, or the tombstone of its key (a null value:
    the user was erased). The key must agree with the value."""
    try:
        return decode_topic_record(key, value)
    except AudienceRecordError as exc:
        raise MembershipError(str(exc)) from None


def read_jsonl(lines: Iterator[bytes]) -> Iterator[tuple[int, AudienceChange | MembershipError]]:
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
