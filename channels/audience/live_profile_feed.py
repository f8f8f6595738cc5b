"""``PREFIX.profiles`` into the live profile store (``scenetrigger profiles``).

The worker publishes each changed user's latest profile on the compacted
topic ``PREFIX.profiles`` (:mod:`agents.live_profiles`): key the user id,
value :func:`~channels.audience.live_profile.encode_live_profile`, a null
value (tombstone) for an erased user. :class:`ProfileFeed` reads it in a
consumer group and keeps :class:`~channels.audience.live_profile.LiveProfileStore`
up to date: a record is a ``put`` (the newer ``updated_ms`` wins, so a record
read again after a restart changes nothing), a tombstone a ``delete``.

Why a process of its own rather than a third topic in ``deliver``: profile
records come at about the event rate (one per active user per worker
settle), triggers at a small fraction of it. In ``deliver``'s batches the
profiles would hold every trigger's delivery behind hundreds of Redis
writes, and deliver's group would scale for both. Here a batch is applied
users side by side (at most ``concurrency`` Redis calls in flight), only the
last record of each user in the batch is written (what compaction keeps),
and it scales and restarts on its own. It reads from the beginning of the
compacted topic on its first start, so a new Redis is filled from it.

An erased user's profile is never written: the worker sends a tombstone
when it takes the erase event, but a profile can still land after it (one in
flight from a worker that lost the partition in a rebalance, a tombstone lost
in a crash), and compaction then keeps that profile as the user's last
record. So before a batch's puts the feed reads the erasure receipts of
their users (:func:`channels.erasure_receipts.erased_at`, the check the
console, explain and the journeys make), and a user who has one gets a
delete instead (``erased``). That holds whatever order the records came in,
and on a new Redis filled from the beginning of the topic; an erased id that
comes back gets no live profile (on-site slots treat it as a visitor without
one): a profile cannot tell the events from before the erasure from later
ones.

A record that cannot be used (no key, a key that is not UTF-8, a value that
is not ``[updated_ms, profile]``) is dead-lettered with its reason and
counted (``scenetrigger_profiles_malformed{reason}``), and the batch goes on.
A Redis that refuses or cannot be reached is waited out
(:class:`channels.infra_retry.Waiter`): nothing is committed before it is
written (at-least-once; a write is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from channels.audience.live_profile import LiveProfile, LiveProfileStore, decode_live_profile
from channels.infra_retry import WAIT_ON, InfraMetrics, Waiter
from triggers.wire import BAD_FIELD, MalformedRecord

log = logging.getLogger("scenetrigger.profiles")

STORED = "stored"  # put into the store
KEPT_NEWER = "kept_newer"  # the store had a newer profile (a record read again)
SUPERSEDED = "superseded"  # a later record of the same user in the batch won
DELETED = "deleted"  # a tombstone: the key is gone
ERASED = "erased"  # the user has an erasure receipt: deleted, never written
MALFORMED = "malformed"  # dead-lettered
RESULTS = (STORED, KEPT_NEWER, SUPERSEDED, DELETED, ERASED, MALFORMED)

# Of these users, the erased ones (erasure_receipts.erased_at over Redis).
ErasedUsers = Callable[[Collection[str]], Awaitable[Collection[str]]]


class RecordDeadLetters(Protocol):
    """Where an unusable record is kept (:class:`channels.transports.deadletter.DeadLetterStore`)."""

    async def add_record(self, source: str, raw: bytes | None, reason: str,
                         detail: str) -> str: ...


@dataclass(slots=True)
class _Op:
    """What a batch does to one user: delete first (a tombstone), then put."""

    delete: bool = False
    put: LiveProfile | None = None
    erased: bool = False  # the put refused: the user has an erasure receipt


def decode(key: bytes | None, value: bytes | None) -> tuple[str, LiveProfile | None]:
    """A record as (user id, profile); None for a tombstone. Raises
    :class:`MalformedRecord` when it cannot be used."""
    if not key:
        raise MalformedRecord(BAD_FIELD, "a live profile record needs the user id as its key")
    try:
        user_id = key.decode()
    except UnicodeDecodeError:
        raise MalformedRecord(BAD_FIELD, "the record's key is not UTF-8") from None
    if value is None:
        return user_id, None
    return user_id, decode_live_profile(user_id, value)


@dataclass
class FeedCounts:
    """What the feed did, for the command's summary."""

    results: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    malformed: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(self.results.values())


class ProfileFeed:
    """``consumer``: a started aiokafka consumer (subscribed, manual commits)
    or a fake with ``getmany``, ``commit``, ``assignment``, ``end_offsets``
    and ``position``."""

    def __init__(self, store: LiveProfileStore, consumer: Any, *, registry: CollectorRegistry,
                 dead_letter: RecordDeadLetters | None = None, poll_ms: int = 500,
                 max_records: int = 2_000, concurrency: int = 64,
                 retry_backoff_s: float = 0.5,
                 on_records: Callable[[int], None] | None = None,
                 erased: ErasedUsers | None = None) -> None:
        self.store = store
        self.consumer = consumer
        self.erased = erased  # None (unit tests of the rest): every put written
        self.dead_letter = dead_letter  # None (tests): counted and logged only
        self._poll_ms = poll_ms
        self._max_records = max_records
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._on_records = on_records  # progress: how many records a batch held
        self.records = Counter("scenetrigger_profiles_records",
                               "Live profile records handled, by result", ["result"],
                               registry=registry)
        self.malformed = Counter("scenetrigger_profiles_malformed",
                                 "Live profile records dead-lettered as unusable, by reason",
                                 ["reason"], registry=registry)
        for result in RESULTS:
            self.records.labels(result)
        self.counts = FeedCounts()
        self._stopping = asyncio.Event()
        self.waiter = Waiter("profiles", InfraMetrics.on(registry), base_s=retry_backoff_s,
                             stopping=self._stopping)

    def stop(self) -> None:
        """Finish the batch in hand, commit it, then return from :meth:`run`."""
        self._stopping.set()

    async def run(self, until_end: bool = False, assign_timeout_s: float = 60.0) -> FeedCounts:
        """Apply batches until :meth:`stop`; with ``until_end``, until every
        partition assigned is read to the end it had when assigned."""
        ends: dict[Any, int] = {}
        waited = 0.0
        while not self._stopping.is_set():
            batch = await self.consumer.getmany(timeout_ms=self._poll_ms,
                                                max_records=self._max_records)
            if batch:
                await self.handle_batch(batch)
            if not until_end:
                continue
            assigned = set(self.consumer.assignment())
            if not assigned:
                waited += self._poll_ms / 1000
                if waited > assign_timeout_s:
                    raise TimeoutError(f"no partition assigned in {assign_timeout_s:.0f}s")
                continue
            await self._follow(ends, assigned)
            if await self._at_end(ends):
                break
        return self.counts

    async def _follow(self, ends: dict[Any, int], assigned: set[Any]) -> None:
        """``ends`` for the partitions assigned now: one lost in a rebalance is
        its new owner's to read (asking its position would raise), one gained
        is read to the end it has now."""
        for tp in [tp for tp in ends if tp not in assigned]:
            del ends[tp]
        gained = [tp for tp in assigned if tp not in ends]
        if gained:
            ends.update(await self.consumer.end_offsets(gained))

    async def _at_end(self, ends: Mapping[Any, int]) -> bool:
        from aiokafka.errors import IllegalStateError

        try:
            for tp, end in ends.items():
                if await self.consumer.position(tp) < end:
                    return False
        except IllegalStateError:  # revoked while we asked: the next round follows
            return False
        return True

    async def handle_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        """Decode every record (dead-lettering the unusable ones), write the
        last state of each user, then commit past the batch."""
        ops: dict[str, _Op] = {}
        offsets: dict[Any, int] = {}
        handled = 0
        for tp, records in batch.items():
            for record in records:
                handled += 1
                offsets[tp] = record.offset + 1
                try:
                    user_id, profile = decode(record.key, record.value)
                except MalformedRecord as exc:
                    await self._bury(record, exc)
                    continue
                op = ops.get(user_id)
                if op is None:
                    op = ops[user_id] = _Op()
                elif op.put is not None:
                    self._count(SUPERSEDED)
                if profile is None:
                    op.delete, op.put = True, None
                else:
                    op.put = profile
        if ops and not await self.waiter.until_done(
                lambda: self._write(ops), WAIT_ON, "live profiles wait for Redis"):
            return  # stopped: nothing committed, the batch comes again
        if offsets:
            await self._commit(offsets)
        if self._on_records is not None:
            self._on_records(handled)

    async def _write(self, ops: Mapping[str, _Op]) -> None:
        """Every user's op, side by side (a retry after a fault redoes them
        all: a delete and a newer-wins put give the same end state again)."""
        if self.erased is not None:  # in the retried step: a receipt read fails like a write
            puts = [user for user, op in ops.items() if op.put is not None]
            for user in await self.erased(puts) if puts else ():
                ops[user].put, ops[user].erased = None, True
        results = await asyncio.gather(*(self._apply(user, op) for user, op in ops.items()))
        for result in results:
            for name in result:
                self._count(name)

    async def _apply(self, user_id: str, op: _Op) -> list[str]:
        async with self._slots:
            done = []
            if op.delete or op.erased:
                await self.store.delete(user_id)
                if op.delete:
                    done.append(DELETED)
                if op.erased:
                    done.append(ERASED)
            if op.put is not None:
                stored = await self.store.put(user_id, op.put.profile, op.put.updated_ms)
                done.append(STORED if stored else KEPT_NEWER)
            return done

    def _count(self, result: str) -> None:
        self.counts.results[result] += 1
        self.records.labels(result).inc()

    async def _bury(self, record: Any, exc: MalformedRecord) -> None:
        source = f"{record.topic}/{record.partition}/{record.offset}"
        if self.dead_letter is not None:
            dead_letter = self.dead_letter

            async def keep() -> None:
                await dead_letter.add_record(source, record.value, exc.reason, exc.detail[:1_000])

            await self.waiter.run(keep, "a malformed live profile waits for the dead-letter")
        log.warning("live profile record skipped", extra={
            "source": source, "reason": exc.reason, "detail": exc.detail})
        self.counts.malformed[exc.reason] = self.counts.malformed.get(exc.reason, 0) + 1
        self.malformed.labels(exc.reason).inc()
        self._count(MALFORMED)

    async def _commit(self, offsets: dict[Any, int]) -> None:
        commit: Callable[[dict[Any, int]], Awaitable[None]] = self.consumer.commit
        try:
            await commit(offsets)
        except Exception as exc:  # a rebalance: the new owner reads them again (idempotent)
            log.warning("offset commit refused", extra={"error": repr(exc)})
