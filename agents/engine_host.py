"""One engine per events partition, with its state in the Faust table.

A partition's engine owns the users whose events land on that partition, its
timer heap and (with ``--clock event``) its clock. Its store reads through a
bounded cache of decoded states and *stages* writes: the agent flushes them
into the table after the triggers they caused are acknowledged by Kafka, so
a state that says "fired" (cooldown, disarmed timer) is never durable before
its trigger is. Each stored value carries the offset of the user's last
applied event, so an event redelivered after a crash (at-least-once) is not
applied twice.

Stored value: ``0x02 | int64 position (big-endian) | UserState.encode()``,
where an event's position is ``offset << 16 | index`` (:func:`position`):
its record's offset and its index in that record (a record may carry many
events, :mod:`agents.batching`), so a redone record applies none of the
events already applied. Values written before records carried batches
(``0x01 | int64 offset``) read as the whole record at that offset applied;
a bare ``UserState.encode()`` value (no envelope) is read as position -1.

Besides the users, each partition keeps one reserved key,
:func:`shapes_key` (``0xFF "scenes:" partition``: never valid UTF-8, so never
a user id's key), holding the shapes of the scenes its states were written
under (:func:`triggers.reshape.encode_shapes`). A host built from recovered
state under other shapes drops what a hot reload would have dropped, so a
worker restarted with a changed config does not read old-shape state as new.
Scans of users skip reserved keys.

An event of type :data:`ERASE` (``scenetrigger erase``) is not given to the
engine: the user's state is forgotten and, at the next settle, its key is
deleted from the table (a tombstone in the changelog), so a restarted
worker recovers nothing of the user.

Identity (docs/audiences.md): an :data:`IDENTIFY` event of anonymous id A
with ``known_id`` K stores the alias A -> K under the reserved key
:func:`alias_key` (A's partition), forgets A's state and puts two things in
:attr:`PartitionHost.outbox` for the agent to send to the events topic keyed
by K: a :data:`MERGE` event carrying A's state, which K's partition folds
into K's (:func:`triggers.merge.merge_states`), and afterwards every later
event of A, re-addressed to K. So K's partition sees A's history first, then
A's new events, in order.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import orjson

from channels.decisions import DecisionRecord, refusal_record, trigger_record
from triggers.engine import Engine
from triggers.errors import EventRejected, StateDecodeError
from triggers.events import Event, Trigger
from triggers.explain import fired_why
from triggers.host import IDENTIFY, MERGE, ClockPolicy, EngineHost, InputRules
from triggers.reshape import decode_shapes, encode_shapes, reset_store, shape_resets, shapes
from triggers.scenes import Limits, Scene
from triggers.state import UserState

log = logging.getLogger("agents.engine_host")

_ENVELOPE = struct.Struct(">Bq")
_MAX_MERGED = 64  # anonymous ids remembered per known user (devices, sessions)
_ENVELOPE_VERSION = 2
_ENVELOPE_OFFSET_ONLY = 1  # before batched records: the offset of the last applied record
NO_OFFSET = -1
INDEX_BITS = 16  # triggers.events.MAX_EVENTS_PER_RECORD == 1 << INDEX_BITS
_LAST_INDEX = (1 << INDEX_BITS) - 1


def position(offset: int, index: int) -> int:
    """An event's place in its partition: record offset, then index in the record."""
    return offset << INDEX_BITS | index

Scan = Callable[[], Iterable[tuple[bytes, bytes]]]
ERASE = "erase"  # the event type that deletes a user's state (docs/audiences.md)
RESERVED = b"\xff"
ALIAS = RESERVED + b"alias:"
MERGED = RESERVED + b"merged:"  # known id -> the anonymous ids merged into it (for erasure)  # first byte of the reserved keys: UTF-8 (user ids) never has it


# On a record forwarded by an identified anonymous id's partition (a merge, a
# re-addressed event): its position there, so a resend is not applied twice.
ORIGIN = "anonymous_position"


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


class TableLike(Protocol):
    """The part of a Faust table the store uses (a dict in unit tests)."""

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...

    def __delitem__(self, key: bytes) -> None: ...


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
        self.merged = {key[len(MERGED):].decode(): _origins(orjson.loads(value))
                       for key, value in self.meta.items() if key.startswith(MERGED)}

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


class Pending:
    """Work of one partition taken but not yet durable: the messages to ack,
    the trigger sends not yet acknowledged by Kafka and their triggers.

    The agent writes the staged states and acks the messages only once every
    send is acknowledged, so neither a state nor a committed offset can get
    ahead of the triggers it implies; meanwhile it keeps taking messages.
    """

    __slots__ = ("events", "failed", "futures", "messages", "since_ms", "triggers")

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.futures: deque[Any] = deque()
        self.triggers: list[Trigger] = []
        self.since_ms: int | None = None
        self.events = 0  # events the messages held (a record may carry many)
        # A send Kafka refused: the batch must never settle (its states and
        # acks would record a trigger nobody received); it is redone from
        # the committed offset by the next worker to own the partition.
        self.failed: BaseException | None = None

    def add(self, message: Any, now_ms: int, events: int = 1) -> None:
        if self.since_ms is None:
            self.since_ms = now_ms
        self.messages.append(message)
        self.events += events

    def acked(self) -> bool:
        """True when every send is acknowledged; raises a send's error, and
        keeps raising it: a failed batch never settles."""
        if self.failed is not None:
            raise self.failed
        futures = self.futures
        while futures and futures[0].done():
            exc = futures.popleft().exception()
            if exc is not None:
                self.failed = exc
                raise exc
        return not futures

    def take(self) -> tuple[list[Any], list[Trigger]]:
        messages, triggers = self.messages, self.triggers
        self.messages, self.triggers = [], []
        self.futures.clear()
        self.since_ms = None
        self.events = 0
        return messages, triggers

    def __len__(self) -> int:
        return len(self.messages)


class PartitionHost:
    """One events partition's adapter over :class:`triggers.host.EngineHost`:
    the host decodes (input rules of the config), runs the engine under the
    worker's clock policy and counts; this adds the Kafka side: the offset
    guard against redelivered events, the staged store, the batch of work
    not yet durable and the scene shapes kept beside the states."""

    def __init__(self, partition: int, host: EngineHost, store: PartitionStore) -> None:
        if host.engine.store is not store:
            raise ValueError("the host's engine must keep its state in this partition's store")
        self.partition = partition
        self.host = host
        self.store = store
        self.last_offset = NO_OFFSET  # newest events offset processed here
        self.tick_sent_ms: int | None = None  # a tick is on its way (sweep)
        self.pending = Pending()
        self.revoked = False  # set when the partition left us: never write again
        self.reshaped = 0  # users whose recovered state the config's shapes changed
        # (key user id, events-topic value) the agent sends on: identity merges
        # and the re-addressed events of identified anonymous ids.
        self.outbox: list[tuple[str, bytes]] = []
        host.aliases = store.aliases  # the host applies them, the store persists them
        self._scenes: dict[str, Scene] | None = None  # by name, for decision records

    @classmethod
    def build(cls, partition: int, store: PartitionStore, scenes: Sequence[Scene],
              limits: Limits, rules: InputRules, clock: ClockPolicy) -> PartitionHost:
        """The partition's host; profiles on: every trigger record carries the
        user's profile for delivery."""
        host = EngineHost(scenes, limits, rules, store=store, track_profile=True, clock=clock)
        return cls(partition, host, store)

    @property
    def engine(self) -> Engine:
        return self.host.engine

    @property
    def event_clock(self) -> bool:
        return self.host.event_clock

    @property
    def idle(self) -> bool:
        """Nothing staged and nothing waiting for acks."""
        return not self.pending and not self.store.dirty

    def is_timer(self, scene: str) -> bool:
        return self.host.is_timer(scene)

    def rebuild(self) -> int:
        """Rebuild the timer heap (and the event clock) from the stored states;
        returns how many timers are armed."""
        clock: int | None = None

        def users() -> Iterator[tuple[str, UserState]]:
            nonlocal clock
            for user_id, state in self.store.load():
                if state.max_ts is not None and (clock is None or state.max_ts > clock):
                    clock = state.max_ts
                yield user_id, state

        armed = self.engine.rebuild_timers(users())
        if self.event_clock and clock is not None and clock > self.engine.clock:
            # The partition clock is the largest ts taken; rejected events never
            # reach state, so it is the largest max_ts. No advance(): that would
            # fire timers outside stream iteration; the next event or tick does.
            self.engine.clock = clock
        return self._reshape_recovered(armed)

    def _reshape_recovered(self, armed: int) -> int:
        """Recovered state written under other scene shapes (a restart with a
        changed config): drop what a hot reload to this config would have
        dropped (staged, written at the next settle), then the new shapes.
        State without stored shapes (written before they were kept) is kept."""
        key = shapes_key(self.partition)
        current = shapes(self.engine.scenes)
        encoded = encode_shapes(current)
        stored = self.store.meta.get(key)
        if stored == encoded:
            return armed
        if stored is not None:
            try:
                plan = shape_resets(decode_shapes(stored), current)
            except StateDecodeError as exc:  # e.g. written by a newer version: keep the state
                log.warning("stored scene shapes unreadable, state kept as is",
                            extra={"partition": self.partition, "error": str(exc)})
                plan = {}
            if plan:
                self.reshaped = reset_store(self.store, plan)
                armed = self.engine.rebuild_timers()  # without the timers just dropped
                log.info("recovered state reshaped for the config's scenes", extra={
                    "partition": self.partition, "scenes": sorted(plan),
                    "users": self.reshaped})
        self.store.stage_meta(key, encoded)
        return armed

    def decode_record(self, value: bytes) -> list[Event | EventRejected]:
        """An events-topic record's events (one, or a batch), each decoded or
        rejected alone (:meth:`EngineHost.decode_record`)."""
        return self.host.decode_record(value)

    def on_event(self, event: Event, at: int, now_ms: int) -> list[Trigger] | None:
        """Apply the event at position ``at`` (:func:`position`); None when the
        user's state already holds it (redelivered after a restart)."""
        store = self.store
        if at <= store.applied_offset(event.user_id):
            return None
        if event.type == ERASE:
            # The anonymous ids merged into the user were the user too: erase them
            # on their own partitions (their alias and anything left there).
            for anonymous in store.forget(event.user_id):
                self.outbox.append((anonymous, orjson.dumps(
                    {"user_id": anonymous, "ts": event.ts, "type": ERASE})))
            return []
        if event.type == IDENTIFY:  # before the alias: a shared device's next login re-aliases
            return self._identify(event, at)
        if store.aliases:
            resolved = self.host.resolve(event)
            if resolved is not event:  # an identified anonymous id: to the known user's partition
                self.outbox.append((resolved.user_id, orjson.dumps(
                    {**resolved.fields, ORIGIN: at})))
                return []
        fields = event.fields
        origin, source = fields.get(ORIGIN), fields.get("anonymous_id")
        forwarded = type(origin) is int and type(source) is str
        if forwarded and origin <= store.origin_applied(event.user_id, source):  # type: ignore[operator,arg-type]
            return None  # sent again by the anonymous id's partition after a crash there
        if event.type == MERGE:
            fired = self._merge(event, at)
        else:
            fired = self.host.take(event, now_ms)
            store.mark_applied(event.user_id, at)
        if forwarded or (event.type == MERGE and type(source) is str and source):
            store.note_merged(event.user_id, source,  # type: ignore[arg-type]
                              origin if forwarded else NO_OFFSET)  # type: ignore[arg-type]
        return fired

    def _identify(self, event: Event, at: int) -> list[Trigger]:
        """The anonymous half (:meth:`EngineHost.detach`) here; A's state goes to
        K's partition as a :data:`MERGE` event for the known half."""
        anonymous, known = event.user_id, self.host.known_id(event)
        if known is None:
            log.warning("identify without a usable known_id ignored",
                        extra={"user_id": anonymous})
            return []
        state = self.host.detach(anonymous, known)
        if state is not None:
            self.outbox.append((known, orjson.dumps({
                "user_id": known, "ts": event.ts, "type": MERGE, "anonymous_id": anonymous,
                ORIGIN: at, "state": orjson.loads(state.encode())})))
        self.store.alias(anonymous, known)  # persisted at the next flush
        return []

    def _merge(self, event: Event, at: int) -> list[Trigger]:
        """Fold an identified anonymous id's state into this (known) user's
        (:meth:`EngineHost.absorb`: the armed timers come along)."""
        try:
            anonymous = UserState.decode(orjson.dumps(event.fields.get("state")))
        except StateDecodeError:
            log.warning("merge event with an unreadable state ignored",
                        extra={"user_id": event.user_id})
            return []
        store = self.store
        self.host.absorb(event.user_id, anonymous)
        store.mark_applied(event.user_id, at)
        return []

    @property
    def refused(self) -> bool:
        """The engine holds user-filter refusals not yet taken."""
        return self.host.engine.has_refusals

    def decision_records(self, fired: Sequence[Trigger]) -> list[DecisionRecord]:
        """The decision log's records of ``fired`` (each with its scene's rule
        and figures, as explain prints them, read off the state the engine
        just wrote) and of the user-filter refusals since the last call."""
        scenes = self._scenes
        if scenes is None:
            scenes = self._scenes = {scene.name: scene for scene in self.engine.scenes}
        out = []
        for trig in fired:
            scene = scenes.get(trig.scene)
            if scene is not None:
                why = fired_why(scene, trig, self.store.get(trig.user_id))
                out.append(trigger_record(trig, scene.kind, why))
        out += [refusal_record(r) for r in self.host.take_refusals()]
        return out

    def on_tick(self, now_ms: int) -> list[Trigger]:
        self.tick_sent_ms = None
        return self.host.tick(now_ms)

    def due(self, now_ms: int) -> int | None:
        """The deadline of a timer due now (by this host's clock), else None."""
        return self.host.due(now_ms)

    def reconfigure(self, scenes: Sequence[Scene], limits: Limits,
                    rules: InputRules | None = None) -> None:
        """Hot reload: new scenes, user state and timers kept by scene name
        unless a scene's new shape invalidates them; the new shapes are
        written after the reshaped states."""
        self.host.reconfigure(scenes, limits, rules)
        self._scenes = None
        self.store.stage_meta(shapes_key(self.partition),
                              encode_shapes(shapes(self.engine.scenes)))
