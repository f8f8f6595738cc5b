"""Many events per Kafka record, on the partition Kafka would pick for each.

The collector and ``scenetrigger produce`` group events by target partition
and write each group as one record: a JSON array of event objects
(:func:`triggers.events.decode_event_record` reads both forms). The
partition is the one Kafka's default partitioner gives the event's
``user_id`` key (:func:`partition_for`), so one-event records keyed by
``user_id`` from any other producer land with the same users, and the worker
reads both forms from the same topic. A group of one is written as a plain
one-event record keyed by its ``user_id``.

Bounds (:class:`BatchLimits`): a record holds at most ``max_events`` events
and ``max_bytes`` bytes of them, and waits at most ``linger_ms`` for more.
A user's events keep their order: records of a partition are handed to the
producer one at a time, in the order they were sealed (aiokafka keeps one
request in flight per partition).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from triggers.errors import SceneTriggerError
from triggers.events import MAX_EVENTS_PER_RECORD

# (partition, key, value) -> the producer's future for that record (or None
# when the sink tracks its sends itself).
SendRecord = Callable[[int, bytes | None, bytes], Awaitable[Any]]


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record: murmur2 of the key
    bytes, made positive (``& 0x7fffffff``, Java's ``toPositive``), modulo
    the partition count."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_events: int = 500
    max_bytes: int = 256 * 1024
    linger_ms: int = 10

    def __post_init__(self) -> None:
        if not 1 <= self.max_events <= MAX_EVENTS_PER_RECORD:
            raise SceneTriggerError(
                f"batch events must be within 1..{MAX_EVENTS_PER_RECORD}, not {self.max_events}")
        if self.max_bytes < 1:
            raise SceneTriggerError(f"batch bytes must be >= 1, not {self.max_bytes}")
        if self.linger_ms < 0:
            raise SceneTriggerError(f"batch linger must be >= 0 ms, not {self.linger_ms}")


ONE_EVENT_RECORDS = BatchLimits(max_events=1, linger_ms=0)


class _Open:
    """A record being filled: its events' JSON values and the future its
    senders wait on."""

    __slots__ = ("done", "key", "size", "timer", "values")

    def __init__(self, key: bytes, done: asyncio.Future[None]) -> None:
        self.key = key  # the first event's key (the record's key when it stays alone)
        self.values: list[bytes] = []
        self.size = 0
        self.done = done
        self.timer: asyncio.TimerHandle | None = None


def encode_batch(values: list[bytes]) -> bytes:
    """The record value of a batch: a JSON array of the event objects."""
    return b"[" + b",".join(values) + b"]"


def record_values(value: bytes) -> list[bytes]:
    """One JSON value per event of a record: a batch's elements, else the
    value itself (also when it is an array that does not parse)."""
    if value[:1] != b"[":
        return [value]
    try:
        items = orjson.loads(value)
    except orjson.JSONDecodeError:
        return [value]
    return [orjson.dumps(item) for item in items]


class RecordBatcher:
    """Groups ``(user key, event JSON)`` by the key's partition into records."""

    def __init__(self, send: SendRecord, partitions: int,
                 limits: BatchLimits | None = None) -> None:
        if partitions < 1:
            raise SceneTriggerError("a topic has at least one partition")
        self._send = send
        self._partitions = partitions
        self.limits = limits or BatchLimits()
        self._open: dict[int, _Open] = {}
        self._lock = asyncio.Lock()  # FIFO: records reach the producer in seal order
        self._inflight: set[asyncio.Future[None]] = set()
        self._sealing: asyncio.Handle | None = None
        self._seals: set[asyncio.Future[None]] = set()
        self._cache: dict[bytes, int] = {}  # key -> partition (murmur2 is pure Python)
        self.events = Counter[int]()  # events stored, per partition
        self.records = 0
        self.failed: BaseException | None = None  # the first send that failed

    def partition(self, key: bytes) -> int:
        cache = self._cache
        partition = cache.get(key)
        if partition is None:
            if len(cache) >= 200_000:
                cache.clear()
            partition = cache[key] = partition_for(key, self._partitions)
        return partition

    async def add(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue one event; the future is done when its record is stored (or
        failed with the producer's error)."""
        limits = self.limits
        partition = self.partition(key)
        batch = self._open.get(partition)
        if batch is not None and batch.values and batch.size + len(value) > limits.max_bytes:
            await self._seal(partition, batch)
            batch = None
        if batch is None:
            batch = self._open[partition] = _Open(key, asyncio.get_running_loop().create_future())
            if limits.linger_ms and limits.max_events > 1:
                batch.timer = asyncio.get_running_loop().call_later(
                    limits.linger_ms / 1000, self._linger_over, partition, batch)
        batch.values.append(value)
        batch.size += len(value) + 1
        done = batch.done
        if len(batch.values) >= limits.max_events:
            await self._seal(partition, batch)
        return done

    async def seal(self) -> None:
        """Hand every open record to the producer now, without waiting for
        its linger (a sender that has no more events coming)."""
        for partition, batch in list(self._open.items()):
            await self._seal(partition, batch)

    def seal_soon(self) -> None:
        """Seal the open records once the event loop turns, not after the
        linger: senders that run in this turn still join them."""
        if self._sealing is None:
            self._sealing = asyncio.get_running_loop().call_soon(self._seal_now)

    def _seal_now(self) -> None:
        self._sealing = None
        task = asyncio.ensure_future(self.seal())
        self._seals.add(task)  # referenced until done
        task.add_done_callback(self._seals.discard)
        task.add_done_callback(_retrieve)

    async def flush(self) -> None:
        """Seal every open record and wait until all are stored; raises the
        first send failure."""
        await self.seal()
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        if self.failed is not None:
            raise self.failed

    def _linger_over(self, partition: int, batch: _Open) -> None:
        if self._open.get(partition) is batch:
            task = asyncio.ensure_future(self._seal(partition, batch))
            self._seals.add(task)  # referenced until done
            task.add_done_callback(self._seals.discard)
            task.add_done_callback(_retrieve)

    async def _seal(self, partition: int, batch: _Open) -> None:
        if self._open.get(partition) is batch:
            del self._open[partition]
        else:
            return  # sealed already (linger and size raced)
        if batch.timer is not None:
            batch.timer.cancel()
        values = batch.values
        if len(values) == 1:
            key: bytes | None = batch.key
            value = values[0]
        else:
            key, value = None, encode_batch(values)
        done = batch.done
        self._inflight.add(done)
        done.add_done_callback(self._inflight.discard)
        try:
            async with self._lock:
                future = await self._send(partition, key, value)
        except BaseException as exc:
            self.failed = self.failed or exc
            if not done.done():
                done.set_exception(exc)
            raise
        count = len(values)
        self.records += 1
        if future is None:
            self.events[partition] += count
            done.set_result(None)
            return

        def stored(fut: asyncio.Future[Any]) -> None:
            if done.done():
                return
            if fut.cancelled():
                done.cancel()
            elif (exc := fut.exception()) is not None:
                self.failed = self.failed or exc
                done.set_exception(exc)
            else:
                self.events[partition] += count
                done.set_result(None)

        future.add_done_callback(stored)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """A linger seal's error reaches the senders through their futures."""
    if not task.cancelled():
        task.exception()
