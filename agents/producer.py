"""Write events to Kafka, many per record on the partition their ``user_id``
key hashes to (:mod:`agents.record_batching`); an event's value is its fields as
orjson bytes; rejects go to the dead-letter topic with their reason.

Used by ``scenetrigger produce`` (files) and by the HTTP collector. The Kafka
side is behind :class:`Sink` so unit tests can count sends without a broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from agents.engine_host import HOPS, ORIGIN, PASSED, REPOINT
from agents.errors import AgentError
from agents.record_batching import BatchLimits, RecordBatcher
from agents.topics import DEAD_LETTERS, DEFAULT_PARTITIONS, EVENTS, dead_letter_value
from config.clock import wall_ms
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import ERASE, REASON_TOO_DEEP, REASON_TOO_LARGE, Event
from triggers.host import DEFAULT_MAX_FUTURE_MS, MERGE, check_future
from triggers.merge import ADMIN_MERGE

Record = tuple[int, Event | EventRejected]


class ProduceError(AgentError):
    """Kafka refused or failed to store what we sent."""


class Sink(Protocol):
    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None = None) -> Any:
        """Queue one message; may wait while the send buffer is full. Returns
        the send's future, or None when the sink tracks its sends itself."""

    async def flush(self) -> None:
        """Wait until every queued message is stored; raise the first failure."""


@dataclass(frozen=True, slots=True)
class ProduceTopics:
    events: str = EVENTS
    dead_letters: str = DEAD_LETTERS


def event_key(event: Event) -> bytes:
    return event.user_id.encode()


def event_value(event: Event) -> bytes:
    return orjson.dumps(event.fields)


# aiokafka's default max_request_size is 1 MiB: leave room for the record's
# key, headers and batch framing.
MAX_RECORD_BYTES = 1_000_000


# Event types only the product itself writes (`scenetrigger erase`, the
# worker's identity merge, `scenetrigger users merge`): from a client they
# would erase or forge state.
REASON_RESERVED_TYPE = "reserved_type"
RESERVED_TYPES = frozenset({ERASE, MERGE, ADMIN_MERGE, REPOINT})
# The position a forwarded event had on the anonymous id's partition: from a
# client it would make the known user's partition skip that id's real forwards
# (and the ids a returned record passed would undo a true merge as a cycle).
REASON_RESERVED_FIELD = "reserved_field"
RESERVED_FIELDS = (ORIGIN, HOPS, PASSED)


def checked_event_value(event: Event, max_record_bytes: int = MAX_RECORD_BYTES) -> bytes:
    """The event as a Kafka value, or :class:`EventRejected` when it cannot
    be one: nested deeper than orjson writes, or over the producer's size
    limit (so it is refused on its own before anything is sent, instead of
    failing mid-way through a request or a file), or of a reserved type or
    with a reserved field."""
    if event.type in RESERVED_TYPES:
        raise EventRejected(REASON_RESERVED_TYPE, f"type {event.type!r} is written only by "
                            "scenetrigger itself (erase, identity merge)")
    for field in RESERVED_FIELDS:
        if field in event.fields:
            raise EventRejected(REASON_RESERVED_FIELD, f"field {field!r} is written only by "
                                "scenetrigger itself (identity merge)")
    try:
        value = orjson.dumps(event.fields)
    except orjson.JSONEncodeError as exc:
        raise EventRejected(REASON_TOO_DEEP, f"cannot be written as JSON: {exc}") from None
    size = len(value) + len(event.user_id.encode())
    if size > max_record_bytes:
        raise EventRejected(REASON_TOO_LARGE, f"the event is {size} bytes as a Kafka record, "
                            f"the producer's limit is {max_record_bytes}")
    return value


class PipelinedProducer:
    """The :class:`Sink` of ``produce`` and the catalog stream (file and HTTP):
    an aiokafka producer that keeps sending while earlier sends are in flight
    (up to ``max_in_flight``), and counts stored messages per topic and
    partition. Not a feedback sink (those are :mod:`channels.feedback`)."""

    def __init__(self, producer: Any, max_in_flight: int = 20_000) -> None:
        self._producer = producer
        self._max_in_flight = max_in_flight
        self._pending: set[asyncio.Future[Any]] = set()
        self._error: BaseException | None = None
        self.partitions: Counter[tuple[str, int]] = Counter()

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None = None) -> Any:
        if self._error is not None:
            raise ProduceError(f"send to {topic} failed: {self._error}") from self._error
        future = await self._producer.send(topic, value=value, key=key, partition=partition)
        self._pending.add(future)
        future.add_done_callback(self._done)
        if len(self._pending) >= self._max_in_flight:
            await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)
        return future

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if self._error is None:
                self._error = exc
            return
        meta = future.result()
        self.partitions[(meta.topic, meta.partition)] += 1

    async def flush(self) -> None:
        await self._producer.flush()
        if self._pending:
            await asyncio.wait(set(self._pending))
        if self._error is not None:
            raise ProduceError(f"a send failed: {self._error}") from self._error

    def counts(self, topic: str) -> dict[int, int]:
        return {p: n for (t, p), n in sorted(self.partitions.items()) if t == topic}


class RateLimiter:
    """At most ``rate`` calls of :meth:`wait` per second, on average from the start
    (a caller that falls behind is not "paid back" with a burst).

    Sleeps only once the debt reaches ``min_sleep_s``: one ``asyncio.sleep`` per
    event costs more than the gap between events at a few thousand per second.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        min_sleep_s: float = 0.005,
    ) -> None:
        if rate <= 0:
            raise SceneTriggerError("rate must be > 0 events/s")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._min_sleep = min_sleep_s
        self._next: float | None = None

    async def wait(self) -> None:
        now = self._clock()
        if self._next is None or self._next < now:
            self._next = now
        delay = self._next - now
        self._next += self._interval
        if delay >= self._min_sleep:
            await self._sleep(delay)


class LastLine:
    """Wraps a line iterator and remembers the line read last: the readers of
    :mod:`scenetrigger.runtime.sources` yield a record right after reading its line, so
    a reject's raw input is ``last`` at that moment."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self.last: bytes = b""

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        self.last = next(self._lines)
        return self.last


@dataclass(frozen=True, slots=True)
class ProduceSummary:
    sent: int
    rejected: int
    reasons: Mapping[str, int]
    partitions: Mapping[int, int]
    elapsed_ms: int
    topic: str
    dead_letter_topic: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "rejected": self.rejected,
            "reasons": dict(self.reasons),
            "partitions": {str(p): n for p, n in self.partitions.items()},
            "elapsed_ms": self.elapsed_ms,
            "topic": self.topic,
            "dead_letter_topic": self.dead_letter_topic,
        }

    def render(self) -> str:
        rate = self.sent * 1000 / self.elapsed_ms if self.elapsed_ms else 0.0
        parts = ", ".join(f"p{p}={n}" for p, n in self.partitions.items())
        lines = [
            f"produced {self.sent} events to {self.topic} in {self.elapsed_ms / 1000:.1f} s "
            f"({rate:,.0f} events/s)" + (f" [{parts}]" if parts else ""),
            f"rejected {self.rejected} to {self.dead_letter_topic}",
        ]
        lines += [f"  {reason}: {n}" for reason, n in sorted(self.reasons.items())]
        return "\n".join(lines)


async def produce_records(
    records: Iterable[Record],
    sink: Sink,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    batching: BatchLimits | None = None,
    counts: Counter[int] | None = None,
    topics: ProduceTopics | None = None,
    source: str = "produce",
    raw_of: Callable[[], bytes] | None = None,
    limiter: RateLimiter | None = None,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
    max_future_ms: int | None = DEFAULT_MAX_FUTURE_MS,
    clock: Callable[[], int] = wall_ms,
    admit: Callable[[Event], EventRejected | None] | None = None,
) -> tuple[int, int, Counter[str]]:
    """Send valid events and dead-letter rejects; returns ``(sent, rejected, reasons)``.

    ``raw_of`` gives the input of the record just read (see :class:`LastLine`);
    a rejected record's ``where`` is ``source:line``. Events are batched per
    partition of the events topic (``partitions`` of them) within ``batching``;
    ``counts`` receives the events stored per partition. An event stamped
    more than ``max_future_ms`` ahead of ``clock`` is rejected (``future_ts``).
    ``admit`` may refuse an event (dead-lettered with its reason: an unsigned
    identify, :mod:`agents.identity_gate`).
    """
    names = topics or ProduceTopics()

    def send_record(partition: int, key: bytes | None, value: bytes) -> Awaitable[Any]:
        return sink.send(names.events, key, value, partition)

    batcher = RecordBatcher(send_record, partitions, batching)
    sent = rejected = 0
    reasons: Counter[str] = Counter()
    for count, (number, item) in enumerate(records, 1):
        value = None
        if not isinstance(item, EventRejected):
            try:
                check_future(item.ts, clock(), max_future_ms)
                value = checked_event_value(item)
                refused = admit(item) if admit is not None else None
                if refused is not None:
                    raise refused
            except EventRejected as exc:
                item = exc
        if isinstance(item, EventRejected):
            raw = raw_of().rstrip(b"\r\n") if raw_of is not None else None
            dead = dead_letter_value(item.reason, item.detail, source, raw, where=number)
            await sink.send(names.dead_letters, None, dead)
            rejected += 1
            reasons[item.reason] += 1
        elif value is not None:
            if limiter is not None:
                await limiter.wait()
            await batcher.add(event_key(item), value)
            sent += 1
        if on_progress is not None and count % progress_every == 0:
            on_progress(count)
    await batcher.flush()
    await sink.flush()
    if counts is not None:
        counts.update(batcher.events)
    return sent, rejected, reasons


async def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int = DEFAULT_PARTITIONS,
    configs: dict[str, dict[str, str]] | None = None, replication: int | None = None,
) -> dict[str, int]:
    """Create the topics that do not exist yet, replicated as
    :mod:`agents.replication` decides (``replication``: the factor, None:
    min(3, brokers)), with ``configs[name]`` as their topic config (e.g.
    ``retention.ms``); returns each topic's partition count once every broker
    shows all its partitions led."""
    from aiokafka.admin import NewTopic

    from agents.kafka_clients import new_admin, open_client
    from agents.replication import (
        broker_ids,
        existing_topics,
        replication_for,
        topic_configs,
        wait_visible,
        warn_under_replicated,
    )

    wanted = list(dict.fromkeys(names))
    client = await open_client(bootstrap)  # probes first: a wrong service fails in seconds
    admin = new_admin(bootstrap)
    try:
        factor = replication_for(replication, len(broker_ids(client)))
        existing = await existing_topics(client, wanted)
        missing = [NewTopic(n, partitions, factor,
                            topic_configs=topic_configs(factor, (configs or {}).get(n)))
                   for n in wanted if n not in existing]
        if missing:
            await admin.start()
            response = await admin.create_topics(missing)
            # TOPIC_ALREADY_EXISTS (36): another process created it meanwhile.
            refused = [f"{err[0]}: {(err[2] if len(err) > 2 else '') or err[1]}"
                       for err in response.topic_errors if err[1] not in (0, 36)]
            if refused:
                raise ProduceError(f"Kafka refused to create topics: {'; '.join(refused)}")
        described = await wait_visible(client, wanted)
        warn_under_replicated({n: p for n, p in described.items() if n in existing}, factor)
        return {n: len(described[n]) for n in wanted}
    finally:
        await admin.close()
        await client.close()
