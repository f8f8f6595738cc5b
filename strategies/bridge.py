"""Run journeys beside the Faust scene worker, coupled by Kafka topics.

The scene worker publishes triggers to its triggers topic; the bridge
consumes them (and an optional feedback topic of feedback events in the one
vocabulary of :mod:`channels.feedback.events`, ``type`` opened/clicked/..., as
``scenetrigger serve --journeys-feedback`` writes them: no translation; and
the optional events topic, whose clickstream events meet goals, e.g. a
purchase) in a consumer group, feeds :class:`strategies.service.JourneyService`, and publishes the
messages to send (and lead handoffs) as JSON records to an actions topic,
keyed by user. Offsets are committed after the service has persisted the
step, so a crash repeats work (at-least-once) and never loses a position.
Journey waits fire on the wall clock from the service's ticker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from channels.feedback.events import KINDS
from strategies.actions import HandoffAction, SendAction, action_to_dict
from strategies.journeys import SUBSCRIBED, UNSUBSCRIBED
from strategies.service import JourneyService
from triggers.audiences.record import AudienceChange, encode_change
from triggers.errors import EventRejected
from triggers.events import Event, decode_event_line, decode_event_record
from triggers.wire import MalformedRecord, decode_trigger

log = logging.getLogger(__name__)
# Every feedback and consent event also reaches the feedback topic
# (agents.topics.feedback_topics): taken there, skipped on the events topic.
FEEDBACK_TYPES = frozenset((*KINDS, SUBSCRIBED, UNSUBSCRIBED))


@dataclass(frozen=True, slots=True)
class BridgeTopics:
    triggers: str
    actions: str
    feedback: str | None = None
    events: str | None = None  # clickstream: live goal exits (a purchase)


class KafkaSender:
    """The service's ``send``: one JSON record per message on the actions topic."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self.sent = 0

    async def __call__(self, action: SendAction | HandoffAction) -> None:
        await self._producer.send_and_wait(self._topic, key=action.user_id.encode(),
                                           value=orjson.dumps(action_to_dict(action)))
        self.sent += 1


class KafkaAudienceSender:
    """The service's audience sink: a journey's audience step as an audience
    change on the compacted ``PREFIX.audiences`` topic (triggers.audiences.record)."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self.sent = 0

    async def __call__(self, change: AudienceChange) -> None:
        await self._producer.send_and_wait(self._topic, key=change.key,
                                           value=encode_change(change))
        self.sent += 1


class JourneyBridge:
    def __init__(self, service: JourneyService, consumer: Any, topics: BridgeTopics,
                 tick_interval_s: float = 0.5) -> None:
        self.service = service
        self.consumer = consumer
        self.topics = topics
        self.tick_interval_s = tick_interval_s
        self.taken = 0

    def subscriptions(self) -> Sequence[str]:
        return self.subscriptions_of(self.topics)

    @staticmethod
    def subscriptions_of(topics: BridgeTopics) -> list[str]:
        """The topics a bridge's consumer reads."""
        return [t for t in (topics.triggers, topics.feedback, topics.events) if t]

    async def run(self) -> None:
        """Consume until cancelled; the consumer must be started and subscribed."""
        ticker = asyncio.create_task(self.service.run_ticker(self.tick_interval_s))
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        await self._take(record)
                if batch:
                    await self.consumer.commit()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _take(self, record: Any) -> None:
        self.taken += 1
        try:
            if record.topic == self.topics.triggers:
                decoded = decode_trigger(record.value)
                if decoded.profile is not None:  # churn tags first: entries see them
                    await self.service.on_profile(decoded.trigger.user_id, decoded.profile,
                                                  decoded.trigger.ts)
                await self.service.on_trigger(decoded.trigger)
            elif record.topic == self.topics.events:
                # one event or a batch; a bad one is the scene worker's to dead-letter
                for event in decode_event_record(record.value or b""):
                    if isinstance(event, Event) and event.type not in FEEDBACK_TYPES:
                        await self.service.on_clickstream(event)
            else:
                await self.service.on_feedback(decode_event_line(record.value or b""))
        except (EventRejected, MalformedRecord, KeyError, TypeError, ValueError) as exc:
            log.warning("bridge skipped a record", extra={"topic": record.topic,
                                                          "offset": record.offset,
                                                          "error": str(exc)})
