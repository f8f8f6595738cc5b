"""Delivery on Kafka: the process between the topics and the channels.

:class:`DeliveryConsumer` reads, in one consumer group, the scene worker's
triggers topic and the journeys' actions topic and hands each record to a
:class:`channels.pipeline.DeliveryPipeline`:

* a trigger record: the user's state is rebuilt from the profile the worker
  put in the record (no engine state here), then
  ``pipeline.deliver(trigger, state, now_ms=wall clock)``: content, policy
  (dedupe by trigger id, quiet hours, back-off, caps), channel;
* a journey ``send``: ``pipeline.deliver_send`` (its content ref rendered for
  the user, dedupe by the action's deterministic message id);
* a ``handoff``: ``pipeline.hand_off``, once per message id.

Records of one partition are handled in order, partitions side by side.
Offsets are committed only once every record of the batch is handled and
the feedback events it caused (``delivered`` / ``failed``, published by a
:class:`channels.feedback.kafka_sink.KafkaFeedbackSink`, ``wait=False``) are acknowledged by
Kafka (at-least-once; the Redis dedupe claim makes a redelivered record
deliver at most once). A record that cannot be decoded, or whose delivery
raises anything but an infrastructure fault (:data:`TRANSIENT`), is one bad
record: it is dead-lettered with its reason (:class:`RecordDeadLetters`),
logged and counted, and the batch moves on. A Redis or network error
retries the record with back-off (:class:`channels.infra_retry.Waiter`);
after ``max_attempts`` the record is dead-lettered instead (if even that
fails, the infrastructure is down and the record is retried until it goes
through or the consumer stops: it is never skipped unrecorded). A Redis that
refuses writes (out of memory, read-only, cluster moving) is waited out
without a limit and never dead-letters the record: it is the server's state,
not the record's. The latest profile of each user seen is kept in a
bounded LRU: quiet-hours deferrals released by the ticker and journey sends
pick their content from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from channels.base import INFRASTRUCTURE_ERRORS
from channels.delivery_records import (
    MalformedRecord,
    decode_action,
    decode_trigger,
    state_with,
)
from channels.feedback.kafka_sink import FeedbackFlush
from channels.infra_retry import WAIT_ON, InfraMetrics, Waiter, is_refusal, stop_task
from channels.orders import SendAction
from channels.pipeline import DeliveryPipeline, Outcome
from config.clock import wall_ms
from triggers.profile import Profile
from triggers.state import UserState

log = logging.getLogger("scenetrigger.deliver")

# Worth retrying the same record: the infrastructure, not the record, failed.
TRANSIENT = INFRASTRUCTURE_ERRORS
MALFORMED = "malformed"
ERROR = "error"
RETRIES_EXHAUSTED = "retries_exhausted"
DEAD_LETTERED = "dead_lettered"


class RecordDeadLetters(Protocol):
    """Where an undeliverable record is kept (:class:`channels.transports.deadletter.DeadLetterStore`)."""

    async def add_record(self, source: str, raw: bytes | None, reason: str,
                         detail: str) -> str: ...


@dataclass(frozen=True, slots=True)
class DeliveryTopics:
    triggers: str
    actions: str


class ProfileCache:
    """The latest profile per user, least recently used dropped first."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = max(1, limit)
        self._states: OrderedDict[str, UserState] = OrderedDict()

    def put(self, user_id: str, profile: Profile) -> UserState:
        state = state_with(profile)
        self._states[user_id] = state
        self._states.move_to_end(user_id)
        if len(self._states) > self._limit:
            self._states.popitem(last=False)
        return state

    def get(self, user_id: str) -> UserState | None:
        state = self._states.get(user_id)
        if state is not None:
            self._states.move_to_end(user_id)
        return state

    def __len__(self) -> int:
        return len(self._states)


@dataclass(frozen=True, slots=True)
class ConsumerMetrics:
    records: Counter  # kind (trigger, send, handoff, action), result (status, malformed, error)
    malformed: Counter  # reason
    dead_letters: Counter  # reason (a malformed reason, error, retries_exhausted)
    released: Counter  # result
    commit_failures: Counter
    profiles: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ConsumerMetrics:
        return cls(
            Counter("scenetrigger_deliver_records", "Records handled by scenetrigger deliver, "
                    "by kind and result", ["kind", "result"], registry=registry),
            Counter("scenetrigger_deliver_malformed", "Records skipped as unusable, by reason",
                    ["reason"], registry=registry),
            Counter("scenetrigger_deliver_dead_letters",
                    "Records kept in the dead-letter instead of delivered, by reason",
                    ["reason"], registry=registry),
            Counter("scenetrigger_deliver_released", "Quiet-hours deferrals released, by result",
                    ["result"], registry=registry),
            Counter("scenetrigger_deliver_commit_failures",
                    "Offset commits refused (a rebalance): the records come again, deduped",
                    registry=registry),
            Gauge("scenetrigger_deliver_profiles", "Users in the profile LRU",
                  registry=registry),
        )


class DeliveryConsumer:
    """Consumes triggers and journey actions into ``pipeline`` (see the module doc).

    ``consumer`` is a started aiokafka consumer subscribed to both topics,
    with ``enable_auto_commit=False`` (or a fake with ``getmany`` and ``commit``).
    ``feedback``: the pipeline's feedback sink when its sends are acknowledged
    later (:meth:`FeedbackFlush.flush` runs before every commit).
    """

    def __init__(self, pipeline: DeliveryPipeline, consumer: Any, topics: DeliveryTopics, *,
                 registry: CollectorRegistry, release_interval_ms: int = 1_000,
                 profiles: int = 100_000, now_ms: Callable[[], int] = wall_ms,
                 poll_ms: int = 500, max_records: int = 500,
                 retry_backoff_s: float = 0.5, feedback: FeedbackFlush | None = None,
                 dead_letter: RecordDeadLetters | None = None, max_attempts: int = 8) -> None:
        self.pipeline = pipeline
        self.dead_letter = dead_letter  # None (tests): a bad record is logged and counted only
        self.max_attempts = max(1, max_attempts)
        self.feedback = feedback  # the pipeline's feedback sink, flushed before commits
        self.consumer = consumer
        self.topics = topics
        self.metrics = ConsumerMetrics.create(registry)
        self.profiles = ProfileCache(profiles)
        self.release_interval_ms = release_interval_ms
        self._now_ms = now_ms
        self._poll_ms = poll_ms
        self._max_records = max_records
        self._stopping = asyncio.Event()
        infra = InfraMetrics.on(registry)
        self.waiter = Waiter("deliver", infra, base_s=retry_backoff_s, stopping=self._stopping)
        # Kafka not acknowledging feedback: the same wait, counted apart.
        self.feedback_waiter = Waiter("deliver_feedback", infra, base_s=retry_backoff_s,
                                      stopping=self._stopping)
        self.handled = 0

    def stop(self) -> None:
        """Finish the record in hand, commit what was handled, then return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        ticker = asyncio.create_task(self._ticker())
        try:
            while not self._stopping.is_set():
                batch = await self._poll()
                if batch:
                    await self.handle_batch(batch)
        finally:
            await stop_task(ticker, "deliver release ticker")

    async def _poll(self) -> Mapping[Any, Sequence[Any]]:
        """The next records, or none once stopped. aiokafka's getmany ignores
        its timeout while a rebalance is in progress (it waits for the new
        assignment), so a stop does not wait for it: cancelled there it has
        handed out nothing, and nothing is committed for what it held."""
        poll = asyncio.ensure_future(self.consumer.getmany(timeout_ms=self._poll_ms,
                                                           max_records=self._max_records))
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({poll, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not poll.done():
                poll.cancel()
        if not poll.done() or poll.cancelled():
            return {}
        batch: Mapping[Any, Sequence[Any]] = poll.result()
        return batch

    async def handle_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        """Each partition's records in order, partitions side by side; then
        commit the offsets past every handled record."""
        done: dict[Any, int] = {}

        async def partition(tp: Any, records: Sequence[Any]) -> None:
            for record in records:
                if self._stopping.is_set() or not await self._handle_retrying(record):
                    return  # stopping: the rest comes again from the committed offset
                done[tp] = record.offset + 1

        await asyncio.gather(*(partition(tp, records) for tp, records in batch.items()))
        if done and await self._flush_feedback():
            await self._commit(done)

    async def handle(self, record: Any) -> Outcome | None:
        """Deliver one record (None: dead-lettered); raises only for transient
        infrastructure errors (:data:`TRANSIENT`), including a failed
        dead-letter write (the record is then retried, never skipped)."""
        kind = "trigger" if record.topic == self.topics.triggers else "action"
        try:
            kind, outcome = await self._deliver(record, kind)
        except MalformedRecord as exc:
            # Counted and logged once it is buried: a refused dead-letter write retries it.
            await self._bury(record, exc.reason, exc.detail)
            log.warning("delivery skipped a malformed record", extra={
                **_where(record), "reason": exc.reason, "detail": exc.detail})
            self.metrics.malformed.labels(exc.reason).inc()
            self.metrics.records.labels(kind, MALFORMED).inc()
            return None
        except TRANSIENT:
            raise
        except Exception as exc:  # one bad record must not stop delivery for everyone else
            await self._bury(record, ERROR, f"{type(exc).__name__}: {exc}")
            log.error("delivery of a record failed", exc_info=exc, extra=_where(record))
            self.metrics.records.labels(kind, ERROR).inc()
            return None
        self.metrics.records.labels(kind, outcome.status).inc()
        log.info("delivery", extra={**_where(record), "kind": kind, "user_id": outcome.user_id,
                                    "status": outcome.status, "reason": outcome.reason,
                                    "channel": outcome.channel, "variant": outcome.variant,
                                    "trigger_id": outcome.trigger_id})
        return outcome

    async def _deliver(self, record: Any, kind: str) -> tuple[str, Outcome]:
        now = self._now_ms()
        if kind == "trigger":
            decoded = decode_trigger(record.value)
            user = decoded.trigger.user_id
            state = (self.profiles.put(user, decoded.profile) if decoded.profile is not None
                     else self.profiles.get(user))
            self.metrics.profiles.set(len(self.profiles))
            return kind, await self.pipeline.deliver(decoded.trigger, state, now)
        action = decode_action(record.value)
        state = self.profiles.get(action.user_id)
        if isinstance(action, SendAction):
            return action.kind, await self.pipeline.deliver_send(action, state, now)
        return action.kind, await self.pipeline.hand_off(action, state, now)

    async def release(self, now_ms: int) -> list[Outcome]:
        """Quiet-hours deferrals due by ``now_ms``, with content from the LRU."""
        outcomes = await self.pipeline.release_due(now_ms, self.profiles.get)
        for outcome in outcomes:
            self.metrics.released.labels(outcome.status).inc()
        return outcomes

    async def _bury(self, record: Any, reason: str, detail: str) -> None:
        """Keep a record that will not be delivered, with its reason."""
        if self.dead_letter is not None:
            where = _where(record)
            source = f"{where['topic']}/{where['partition']}/{where['offset']}"
            await self.dead_letter.add_record(source, record.value, reason, detail[:1_000])
        self.metrics.dead_letters.labels(reason).inc()

    async def _handle_retrying(self, record: Any) -> bool:
        """Handle ``record``, retrying transient errors; after ``max_attempts``
        of them the record is dead-lettered (retried on while even that
        fails). A Redis refusal is waited out and counts no attempt. False
        when stopped first."""
        tries = 0

        async def attempt() -> None:
            nonlocal tries
            tries += 1
            try:
                await self.handle(record)
            except TRANSIENT as exc:
                if is_refusal(exc):
                    tries -= 1
                    raise
                if tries < self.max_attempts:
                    raise
                log.warning("delivery gave up on a record", extra={
                    **_where(record), "attempts": tries, "error": repr(exc)})
                await self._bury(record, RETRIES_EXHAUSTED,
                                 f"{tries} attempts, last: {type(exc).__name__}: {exc}")
            self.handled += 1

        return await self.waiter.until_done(attempt, TRANSIENT, "delivery will retry the record",
                                            _where(record))

    async def _flush_feedback(self) -> bool:
        """Wait until the feedback sent so far is acknowledged, retrying while
        Kafka refuses; False when stopped first (nothing is committed then:
        the records come again, as duplicates, and their feedback is lost)."""
        if self.feedback is None:
            return True
        # Kafka down or refusing: the sends are kept and sent again.
        return await self.feedback_waiter.until_done(self.feedback.flush, (Exception,),
                                                     "feedback not acknowledged, offsets wait")

    async def _commit(self, offsets: dict[Any, int]) -> None:
        from aiokafka.errors import CommitFailedError

        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:  # a rebalance: the new owner redoes them (deduped)
            self.metrics.commit_failures.inc()
            log.warning("offset commit refused", extra={"error": str(exc)})

    async def _ticker(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.release_interval_ms / 1000)
            try:
                await self.release(self._now_ms())
            except WAIT_ON as exc:  # Redis refusing or away: the next tick tries again
                self.waiter.count(exc)
                log.warning("releasing deferred deliveries waits", extra={"error": repr(exc)})
            except Exception:  # the next tick tries again
                log.exception("releasing deferred deliveries failed")
            if self.feedback is not None:  # released sends' feedback: tied to no offset
                try:
                    await self.feedback.flush()
                except Exception as exc:  # kept: the next flush sends them again
                    log.warning("feedback not acknowledged", extra={"error": repr(exc)})


def _where(record: Any) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}
