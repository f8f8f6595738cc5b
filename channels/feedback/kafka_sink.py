"""The one feedback sink to Kafka: :class:`KafkaFeedbackSink`.

Each feedback event (``opened``, ``clicked``, ``delivered``, a consent
change, ...) is sent, keyed by user, to the events topic (so scenes see it)
and optionally to the journeys' feedback topic, the same record on each; with
``decisions`` also the decision log's feedback record. Two ways to wait:

* ``wait=True`` (``scenetrigger serve``, ``users consent``): ``emit`` returns
  once Kafka acknowledged its sends, and raises when one failed;
* ``wait=False`` (``scenetrigger deliver``, a process that commits consumer
  offsets): ``emit`` does not wait for Kafka (a send per message would bound
  delivery by the broker's round trip); :meth:`KafkaFeedbackSink.flush` waits
  until every send so far is acknowledged, and the consumer calls it before
  it commits a batch's offsets (at-least-once). A send that fails is kept and
  sent again by the next flush, which raises until it goes through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter

from channels.errors import ChannelError
from channels.feedback.decisions import feedback_record
from channels.feedback.events import FeedbackEvent

log = logging.getLogger("scenetrigger.feedback")


class FeedbackFlush(Protocol):
    """What a consumer needs of a sink whose sends are acknowledged later."""

    async def flush(self) -> None: ...


class FeedbackNotAcked(ChannelError):
    """Some feedback sends failed; they are kept and the next flush sends them again."""


@dataclass(slots=True)
class _Send:
    topic: str
    key: bytes
    value: bytes
    kind: str
    future: Any = None  # None: not (or no longer) in flight, send at the next flush


class KafkaFeedbackSink:
    """Sends each event to ``topics`` (and its decision record to
    ``decisions``); ``wait``: see the module.

    ``producer`` is a started aiokafka producer (``acks="all"``) or anything
    with its ``send`` coroutine returning a future of the record's metadata;
    it may be set after construction, before the first emit.
    """

    def __init__(self, producer: Any, topics: Sequence[str], *, decisions: str | None = None,
                 wait: bool = True, registry: CollectorRegistry | None = None) -> None:
        self.producer = producer
        self.topics = list(topics)
        self.decisions = decisions
        self.wait = wait
        self._pending: list[_Send] = []
        self._lock = asyncio.Lock()  # one flush at a time: none returns before older sends
        self.acked = Counter("scenetrigger_deliver_feedback", "Feedback events acknowledged "
                             "by Kafka, by kind (one per topic)", ["kind"], registry=registry)
        self.failures = Counter("scenetrigger_deliver_feedback_send_failures",
                                "Feedback sends that failed and are sent again",
                                registry=registry)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def emit(self, event: FeedbackEvent) -> None:
        key, value = event.user_id.encode(), orjson.dumps(event.to_dict())
        sends = [_Send(topic, key, value, event.kind) for topic in self.topics]
        if self.decisions is not None:
            sends.append(_Send(self.decisions, key, feedback_record(event).encode(), event.kind))
        if self.wait:
            for send in sends:
                await self.producer.send_and_wait(send.topic, send.value, key=send.key)
                self.acked.labels(send.kind).inc()
            return
        for send in sends:
            await self._start(send)  # never raises: a failed start is retried by flush
            self._pending.append(send)

    async def flush(self) -> None:
        """Return once every send so far is acknowledged; raise
        :class:`FeedbackNotAcked` when some failed (kept for the next flush)."""
        async with self._lock:
            sends, self._pending = self._pending, []
            failed: list[_Send] = []
            error: BaseException | None = None
            for done, send in enumerate(sends):
                try:
                    if send.future is None and not await self._start(send):
                        failed.append(send)
                        continue
                    # shielded: a cancelled wait must not cancel the producer's send
                    await asyncio.shield(send.future)
                except asyncio.CancelledError:  # a stop gave up waiting: keep the rest
                    self._pending[:0] = [*failed, *sends[done:]]
                    raise
                except Exception as exc:  # the broker refused or timed out: send it again
                    send.future = None
                    self.failures.inc()
                    failed.append(send)
                    error = error or exc
                    continue
                self.acked.labels(send.kind).inc()
            if failed:
                self._pending[:0] = failed  # before sends emitted meanwhile
                raise FeedbackNotAcked(f"{len(failed)} feedback sends not acknowledged: "
                                       f"{error!r}")

    async def _start(self, send: _Send) -> bool:
        try:
            send.future = await self.producer.send(send.topic, send.value, key=send.key)
        except Exception as exc:  # e.g. no metadata yet: flush tries again
            send.future = None
            self.failures.inc()
            log.warning("feedback send failed, will retry", extra={
                "topic": send.topic, "kind": send.kind, "error": repr(exc)})
            return False
        return True
