"""What the agent sends besides the table: triggers, the decision log's
records, identity records forwarded to the events topic, audience changes
and dead letters.

Triggers, decision records and forwarded events are sent as soon as they are
decided (latency: :class:`Outbox`, right after the message that decided them).
Their futures, and those of the audience changes, join the partition's batch:
the batch settles (agents.checkpoint) only once they are acknowledged, so no
state or committed offset gets ahead of what it implies.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from agents.engine_host import PartitionHost
from agents.metrics import RESULT_REJECTED, WorkerMetrics
from agents.settings import TopicNames
from agents.topics import dead_letter_record
from channels.feedback.decisions import OUTCOME_REFUSED
from triggers.audiences.record import encode_change
from triggers.events import Trigger
from triggers.wire import encode_trigger


class Outbox:
    """The records decided while taking one message (triggers, decision
    records, forwarded events), handed straight to the Kafka producer right
    after it. Not through Faust's producer buffer: there they queued behind a
    settle's changelog writes (one at a time, ~70 us each) before reaching
    the producer. Their futures join the partition's batch, as before."""

    def __init__(self, producer: Callable[[], Any]) -> None:
        self._producer = producer  # Faust's producer: send() hands to aiokafka
        # (futures of the batch, topic, key, value, done callback or None)
        # value None: a tombstone (compacted topics)
        self.queued: list[tuple[Any, str, bytes, bytes | None, Callable[[Any], None] | None]] = []

    def add(self, futures: Any, topic: str, key: bytes, value: bytes | None,
            on_done: Callable[[Any], None] | None = None) -> None:
        self.queued.append((futures, topic, key, value, on_done))

    async def send(self) -> None:
        """Send what was queued, in order; a refused send raises (the caller stops)."""
        queued, self.queued = self.queued, []
        send = self._producer().send
        for futures, topic, key, value, on_done in queued:
            future = await send(topic, key, value, None, None, None)
            futures.append(future)
            if on_done is not None:
                future.add_done_callback(on_done)


class Outputs:
    """The worker's sends, one method per kind of record."""

    def __init__(self, topics: TopicNames, metrics: WorkerMetrics, outbox: Outbox,
                 audiences: Any, dead_letters: Any, hooked: bool) -> None:
        self.topics = topics
        self.metrics = metrics
        self.outbox = outbox
        self._audiences = audiences  # Faust topics: send_soon
        self._dead_letters = dead_letters
        self._hooked = hooked  # a trigger hook runs at the settle: keep the triggers
        self._fired: dict[str, Any] = {}  # scene -> its triggers_total child

    def emit(self, host: PartitionHost, fired: list[Trigger], now_ms: int,
             event_time_s: float | None) -> None:
        """Send triggers now (latency); their acks are awaited before the state
        that records them (cooldowns, disarmed timers) is written."""
        add, topic = self.outbox.add, self.topics.triggers
        metrics = self.metrics
        pending = host.pending
        states = host.store
        for trig in fired:
            # The state the engine just wrote (staged, in the store's cache).
            state = states.get(trig.user_id)
            value = encode_trigger(trig, now_ms, state.profile if state is not None else None)
            timer = host.is_timer(trig.scene)
            on_done = None
            if event_time_s and not timer:
                on_done = functools.partial(self._observe_latency, event_time_s)
            add(pending.futures, topic, trig.user_id.encode(), value, on_done)
            counter = self._fired.get(trig.scene)
            if counter is None:
                counter = self._fired[trig.scene] = metrics.triggers.labels(trig.scene)
            counter.inc()
            if timer and not host.event_clock:
                metrics.timer_lag.observe(max(0, now_ms - trig.ts) / 1000)
        self.decide(host, fired)
        if self._hooked:
            pending.triggers += fired

    def decide(self, host: PartitionHost, fired: Sequence[Trigger]) -> None:
        """The decision log's records of the fires and of the user-filter
        refusals ride with the triggers: acked before the batch settles."""
        add, topic = self.outbox.add, self.topics.decisions
        futures = host.pending.futures
        for record in host.decision_records(fired):
            add(futures, topic, record.user_id.encode(), record.encode())
            if record.outcome == OUTCOME_REFUSED:  # a user filter, the trigger budget
                self.metrics.refused.labels(record.scene, record.rule).inc()

    def forward(self, host: PartitionHost) -> None:
        """Send the host's identity records to the events topic, keyed by the
        known user; acked before the batch settles, like triggers."""
        add, topic = self.outbox.add, self.topics.events
        futures = host.pending.futures
        for key, value in host.outbox:
            add(futures, topic, key.encode(), value)
        host.outbox.clear()

    def audiences(self, host: PartitionHost) -> None:
        """Audience changes (triggers/audiences/record.py) on PREFIX.audiences,
        acked before the batch settles, like triggers."""
        changes = host.audience_changes()
        tombstones = host.audience_tombstones() if host.tombstones else []
        if not changes and not tombstones:
            return
        send = self._audiences.send_soon
        futures = host.pending.futures
        for change in changes:
            futures.append(send(key=change.key, value=encode_change(change)))
        for key in tombstones:  # an erasure: the keys are deleted (same partition, after)
            futures.append(send(key=key, value=None))

    def dead_letter(self, message: Any, reason: str, detail: str, now_ms: int,
                    index: int | None = None) -> None:
        """Sent before the offset commits (Faust flushes the producer first)."""
        self.metrics.events.labels(RESULT_REJECTED, reason).inc()
        record = dead_letter_record(reason, detail, message, now_ms, index)
        self._dead_letters.send_soon(key=message.key, value=record)

    def _observe_latency(self, event_time_s: float, _future: Any) -> None:
        self.metrics.event_to_trigger.observe(max(0.0, time.time() - event_time_s))
