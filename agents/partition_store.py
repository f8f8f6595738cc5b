"""A partition's user states in the worker's Faust table, through a bounded
cache of decoded states, with staged writes: the agent flushes them into the
table after the triggers they caused are acknowledged by Kafka, so a state
that says "fired" (cooldown, disarmed timer) is never durable before its
trigger is. Each stored value carries the position of the user's last
applied event (:mod:`agents.stored_state`), so an event redelivered after a
crash (at-least-once) is not applied twice. An erased user's key is deleted
at the next flush (a tombstone in the changelog)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Protocol

import orjson

from agents.stored_state import (
    ALIAS,
    MERGED,
    NO_OFFSET,
    alias_key,
    is_reserved,
    merged_key,
    pack_state,
    unpack_state,
)
from triggers.state import UserState

_MAX_MERGED = 64  # anonymous ids remembered per known user (devices, sessions)
Scan = Callable[[], Iterable[tuple[bytes, bytes]]]


class TableLike(Protocol):
    """The part of a Faust table the store uses (a dict in unit tests)."""

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...


class _Entry:
    __slots__ = ("offset", "size", "state")

    def __init__(self, state: UserState, offset: int, size: int) -> None:
        self.state = state
        self.offset = offset
        self.size = size  # stored bytes, 0 while not yet in the table


class PartitionStore:
    """The engine's :class:`triggers.state.StateStore` for one partition."""

    def __init__(self, table: TableLike, scan: Scan, cache_limit: int = 50_000) -> None:
        self._table = table
        self._scan = scan
        self._limit = max(cache_limit, 16)
        self._cache: dict[str, _Entry] = {}
        # Users known to have no stored state: a new user is looked up twice
        # per event (offset guard, then the engine), each a table read.
        self._absent: set[str] = set()
        # True while the cache holds every stored user of the partition (the
        # recovery scan fitted and nothing was evicted since): a user not in
        # the cache then has no state, and is not looked up in the table
        # (a miss costs a RocksDB read through Faust's layers and a KeyError).
        self._complete = False
        self._dirty: dict[str, None] = {}  # insertion-ordered set
        self._forgotten: set[str] = set()  # erased users whose table key the flush deletes
        self.aliases: dict[str, str] = {}  # identified anonymous id -> known user id
        # Known user id -> the anonymous ids merged in (for erasure), each with
        # the newest position of its own partition applied here (the guard
        # against a forward sent again after a crash there).
        self.merged: dict[str, dict[str, int]] = {}
        self._meta_deleted: set[bytes] = set()
        self.meta: dict[bytes, bytes] = {}  # reserved keys found by load()
        self._meta_staged: dict[bytes, bytes] = {}
        self.users = 0
        self.bytes = 0

    # -- StateStore -----------------------------------------------------------

    def get(self, user_id: str) -> UserState | None:
        entry = self._entry(user_id)
        return None if entry is None else entry.state

    def put(self, user_id: str, state: UserState) -> None:
        entry = self._cache.get(user_id)
        if entry is None:
            entry = self._cache[user_id] = _Entry(state, NO_OFFSET, 0)
            self._absent.discard(user_id)
            self._forgotten.discard(user_id)
        else:
            entry.state = state
        self._dirty[user_id] = None

    def items(self) -> Iterator[tuple[str, UserState]]:
        seen = set()
        for user_id, entry in list(self._cache.items()):
            seen.add(user_id)
            yield user_id, entry.state
        for key, data in self._scan():
            if is_reserved(key):
                continue
            user_id = key.decode()
            if user_id not in seen and user_id not in self._forgotten:
                yield user_id, UserState.decode(unpack_state(data)[1])

    def __len__(self) -> int:
        return self.users

    # -- offsets and writes ---------------------------------------------------

    def applied_offset(self, user_id: str) -> int:
        entry = self._entry(user_id)
        return NO_OFFSET if entry is None else entry.offset

    def mark_applied(self, user_id: str, offset: int) -> None:
        entry = self._cache.get(user_id)
        if entry is not None:
            entry.offset = offset

    def alias(self, anonymous_id: str, known_id: str) -> None:
        """From now on ``anonymous_id`` is ``known_id`` (written at the next flush)."""
        self.aliases[anonymous_id] = known_id
        self._meta_deleted.discard(alias_key(anonymous_id))
        self.stage_meta(alias_key(anonymous_id), known_id.encode())

    def unalias(self, anonymous_id: str) -> None:
        """``anonymous_id`` stands for itself again (an identify undone: a cycle)."""
        if self.aliases.pop(anonymous_id, None) is not None:
            self._meta_staged.pop(alias_key(anonymous_id), None)
            self._meta_deleted.add(alias_key(anonymous_id))

    def origin_applied(self, known_id: str, anonymous_id: str) -> int:
        """The newest position of ``anonymous_id``'s partition applied to ``known_id``."""
        ids = self.merged.get(known_id)
        return NO_OFFSET if ids is None else ids.get(anonymous_id, NO_OFFSET)

    def note_merged(self, known_id: str, anonymous_id: str, origin: int = NO_OFFSET) -> None:
        """``anonymous_id`` is merged into ``known_id``, up to its position ``origin``."""
        ids = self.merged.setdefault(known_id, {})
        origin = max(origin, ids.pop(anonymous_id, NO_OFFSET))
        ids[anonymous_id] = origin  # last: the most recently active id
        while len(ids) > _MAX_MERGED:
            del ids[next(iter(ids))]
        self._meta_deleted.discard(merged_key(known_id))
        self.stage_meta(merged_key(known_id), orjson.dumps(ids))

    def take_merged(self, known_id: str) -> list[str]:
        """An admin merge moves ``known_id`` away: its list of merged ids goes
        with it (removed here at the next flush); returns the ids."""
        ids = self.merged.pop(known_id, None)
        if ids is None:
            return []
        self._meta_staged.pop(merged_key(known_id), None)
        self._meta_deleted.add(merged_key(known_id))
        return list(ids)

    def forget(self, user_id: str) -> list[str]:
        """Erase the user: gone from the cache now, from the table at the next flush
        (its state, its alias if it was an identified anonymous id, its list of
        merged anonymous ids). Returns those ids: they are the user's too."""
        merged = self.merged.pop(user_id, None)
        for key, found in ((alias_key(user_id), self.aliases.pop(user_id, None)),
                           (merged_key(user_id), merged)):
            if found is not None:
                self._meta_staged.pop(key, None)
                self._meta_deleted.add(key)
        entry = self._entry(user_id)
        self._cache.pop(user_id, None)
        self._dirty.pop(user_id, None)
        self._absent.add(user_id)
        if entry is not None:
            self._forgotten.add(user_id)
            if entry.size:
                self.users -= 1
                self.bytes -= entry.size
        return list(merged or ())

    def delete(self, user_id: str) -> None:
        self.forget(user_id)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._forgotten or self._meta_deleted)

    def staged_users(self) -> tuple[Collection[str], Collection[str]]:
        """The users the next flush writes, and the erased ones whose keys it deletes."""
        return self._dirty.keys(), self._forgotten

    def stage_meta(self, key: bytes, value: bytes) -> None:
        """A reserved key's value, written by the next flush after the states."""
        self._meta_staged[key] = value

    def flush(self) -> int:
        """Write every staged state, then the staged reserved keys, into the
        table (must run inside the agent's stream iteration of an event of
        this partition); returns how many states."""
        table = self._table
        written = 0
        for user_id in self._dirty:
            entry = self._cache[user_id]
            data = pack_state(entry.offset, entry.state.encode())
            table[user_id.encode()] = data
            if entry.size == 0:
                self.users += 1
            self.bytes += len(data) - entry.size
            entry.size = len(data)
            written += 1
        self._dirty.clear()
        for user_id in self._forgotten:
            key = user_id.encode()
            if table.get(key) is not None:
                del table[key]  # a Faust table writes a tombstone to its changelog
        self._forgotten.clear()
        for key in self._meta_deleted:
            if table.get(key) is not None:
                del table[key]
            self.meta.pop(key, None)
        self._meta_deleted.clear()
        # Last: shapes written before the states they describe could make a
        # crash in between read old-shape states as new.
        for key, value in self._meta_staged.items():
            table[key] = value
            self.meta[key] = value
        self._meta_staged.clear()
        self._evict()
        return written

    def load(self) -> Iterator[tuple[str, UserState]]:
        """Scan the partition's stored states (after recovery), counting them."""
        self._complete = False
        self._cache.clear()
        self._dirty.clear()
        self.meta.clear()
        self._meta_staged.clear()
        self.users = 0
        self.bytes = 0
        for key, data in self._scan():
            if is_reserved(key):
                self.meta[key] = data
                continue
            offset, raw = unpack_state(data)
            state = UserState.decode(raw)
            user_id = key.decode()
            self.users += 1
            self.bytes += len(data)
            if len(self._cache) < self._limit:
                self._cache[user_id] = _Entry(state, offset, len(data))
            yield user_id, state
        self._complete = len(self._cache) == self.users
        self.aliases.clear()  # in place: the partition's EngineHost holds this dict
        self.aliases.update({key[len(ALIAS):].decode(): value.decode()
                             for key, value in self.meta.items() if key.startswith(ALIAS)})
        self.merged.clear()  # in place too: the host checks it for known users
        self.merged.update({key[len(MERGED):].decode(): _origins(orjson.loads(value))
                            for key, value in self.meta.items() if key.startswith(MERGED)})

    # -- internals ------------------------------------------------------------

    def _entry(self, user_id: str) -> _Entry | None:
        cache = self._cache
        entry = cache.get(user_id)
        if entry is not None:
            return entry
        if self._complete or user_id in self._absent:
            return None
        data = self._table.get(user_id.encode())
        if data is None:
            self._absent.add(user_id)
            return None
        offset, raw = unpack_state(data)
        entry = cache[user_id] = _Entry(UserState.decode(raw), offset, len(data))
        return entry

    def _evict(self) -> None:
        cache = self._cache
        excess = len(cache) - self._limit
        if excess <= 0:
            return
        self._complete = False
        for user_id in list(cache)[:excess]:
            del cache[user_id]


def _origins(stored: Any) -> dict[str, int]:
    """A stored merged-ids value: ``{id: origin position}``, or a list of ids
    (written before the positions were kept: no position known)."""
    if isinstance(stored, list):
        return dict.fromkeys(stored, NO_OFFSET)
    return {str(k): int(v) for k, v in stored.items()}
