"""How the worker's Faust table stores a user's state, and the table's
reserved keys (:mod:`agents.partition_store` reads and writes them).

Stored value: ``0x02 | int64 position (big-endian) | UserState.encode()``,
where an event's position is ``offset << 16 | index`` (:func:`position`):
its record's offset and its index in that record (a record may carry many
events, :mod:`agents.record_batching`), so a redone record applies none of the
events already applied. Values written before records carried batches
(``0x01 | int64 offset``) read as the whole record at that offset applied;
a bare ``UserState.encode()`` value (no envelope) is read as position -1.

Besides the users, each partition keeps reserved keys, all starting with
:data:`RESERVED` (``0xFF``: never valid UTF-8, so never a user id's key):
:func:`shapes_key` (``0xFF "scenes:" partition``) holds the shapes of the
scenes its states were written under (:func:`triggers.reshape.encode_shapes`);
:func:`alias_key` an identified anonymous id's known user; :func:`merged_key`
a known user's merged anonymous ids (for erasure). Scans of users skip them
(:func:`is_reserved`).
"""

from __future__ import annotations

import struct

from triggers.errors import StateDecodeError

_ENVELOPE = struct.Struct(">Bq")
_ENVELOPE_VERSION = 2
_ENVELOPE_OFFSET_ONLY = 1  # before batched records: the offset of the last applied record
NO_OFFSET = -1
INDEX_BITS = 16  # triggers.events.MAX_EVENTS_PER_RECORD == 1 << INDEX_BITS
_LAST_INDEX = (1 << INDEX_BITS) - 1


def position(offset: int, index: int) -> int:
    """An event's place in its partition: record offset, then index in the record."""
    return offset << INDEX_BITS | index


RESERVED = b"\xff"  # first byte of the reserved keys: UTF-8 (user ids) never has it
ALIAS = RESERVED + b"alias:"
MERGED = RESERVED + b"merged:"  # known id -> the anonymous ids merged into it (for erasure)


def shapes_key(partition: int) -> bytes:
    """The partition's scene-shapes key (one per partition: the table's key
    space is shared by all partitions)."""
    return RESERVED + b"scenes:%d" % partition


def alias_key(anonymous_id: str) -> bytes:
    """Where an identified anonymous id's known user is kept (its own partition)."""
    return ALIAS + anonymous_id.encode()


def merged_key(known_id: str) -> bytes:
    return MERGED + known_id.encode()


def is_reserved(key: bytes) -> bool:
    return key[:1] == RESERVED


def pack_state(applied: int, state: bytes) -> bytes:
    return _ENVELOPE.pack(_ENVELOPE_VERSION, applied) + state


def unpack_state(data: bytes) -> tuple[int, bytes]:
    """``(position of the last applied event, UserState bytes)``."""
    if data[:1] == b"[":  # a bare UserState.encode() value
        return NO_OFFSET, data
    if len(data) < _ENVELOPE.size or data[0] not in (_ENVELOPE_VERSION, _ENVELOPE_OFFSET_ONLY):
        raise StateDecodeError(f"unknown state envelope (first byte {data[:1]!r})")
    version, applied = _ENVELOPE.unpack_from(data)
    if version == _ENVELOPE_OFFSET_ONLY and applied >= 0:
        applied = position(applied, _LAST_INDEX)
    return applied, data[_ENVELOPE.size:]
