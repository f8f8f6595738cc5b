"""`scenetrigger deliver` publishes delivered / failed feedback: the
DeliveryConsumer over the real pipeline with a KafkaFeedbackSink (wait=False) on a fake
producer (aiokafka's ``send`` coroutine returning a future the test
resolves), and what the worker, the scenes and the journeys make of the
records it writes."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agents.topics import feedback_topics
from channels.assembly import build_pipeline
from channels.base import DeliveryResult, Message
from channels.feedback.kafka_sink import FeedbackNotAcked, KafkaFeedbackSink
from channels.kafka_delivery import DeliveryConsumer
from channels.pipeline import message_id_for
from channels.policy.store import MemoryPolicyStore
from config.loader import load_config, load_config_text
from strategies.actions import SendAction, action_to_dict
from tests.channels.content_factories import user_state
from tests.channels.test_kafka_delivery_unit import (
    NOW,
    SCENE,
    TOPICS,
    FakeConsumer,
    Record,
    config,
    trigger_value,
)
from triggers.engine import Engine
from triggers.events import Trigger, decode_event_line
from triggers.state import MemoryStore

EVENTS, JOURNEYS = "p.events", "p.feedback"


class FakeProducer:
    """aiokafka's ``send``: records the send and returns a future resolved by
    the test (``ack``) or at once (``auto``); ``fail`` sends fail first."""

    def __init__(self, auto: bool = True, fail: int = 0) -> None:
        self.auto = auto
        self.fail = fail
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        if self.fail:
            self.fail -= 1
            future.set_exception(ConnectionError("broker gone"))
        elif self.auto:
            future.set_result(None)
        return future

    def ack(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(None)

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(v) for t, _, v in self.sent if t == topic]


class Sender:
    """Channel sender: user ``bad*`` is refused by the channel."""

    dead_letter = None

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message, channel: str | None = None, *,
                   dead_letter: bool = True) -> DeliveryResult:
        self.messages.append(message)
        if message.user_id.startswith("bad"):
            return DeliveryResult(False, channel or "", message.message_id,
                                  error="HTTP 410 gone")
        return DeliveryResult(True, channel or "", message.message_id)


class Harness:
    def __init__(self, producer: FakeProducer, journeys: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.producer = producer
        self.sink = KafkaFeedbackSink(producer, [EVENTS, JOURNEYS] if journeys else [EVENTS],
                                      wait=False, registry=self.registry)
        self.sender = Sender()
        self.pipeline = build_pipeline(config(), "live", self.sender,
                                       channels=["inbox", "webhook", "crm"],
                                       store=MemoryPolicyStore(), feedback=self.sink,
                                       metrics_registry=self.registry)
        self.consumer = FakeConsumer([])
        self.delivery = DeliveryConsumer(self.pipeline, self.consumer, TOPICS,
                                         registry=self.registry, now_ms=lambda: NOW,
                                         release_interval_ms=3_600_000,
                                         retry_backoff_s=0.01, feedback=self.sink)
        self.consumer.owner = self.delivery

    def triggers(self, *users: str) -> dict[Any, list[Record]]:
        return {("p.triggers", 0): [
            Record("p.triggers", 0, n, trigger_value(u, user_state(u, "search_driven")))
            for n, u in enumerate(users)]}


async def test_delivered_and_failed_feedback_go_to_both_topics_keyed_by_user() -> None:
    h = Harness(FakeProducer())
    await h.delivery.handle_batch(h.triggers("s1", "bad1"))
    assert h.consumer.commits == [{("p.triggers", 0): 2}]
    for topic in (EVENTS, JOURNEYS):
        records = h.producer.records(topic)
        assert [(r["type"], r["user_id"]) for r in records] == [("delivered", "s1"),
                                                                ("failed", "bad1")]
        for record, message in zip(records, h.sender.messages, strict=True):
            assert record["message_id"] == message.message_id == message_id_for(
                Trigger(SCENE, record["user_id"], "1004659", record["ts"] - 60_000)
                .trigger_id, message.channel)
            assert (record["scene"], record["channel"], record["source"]) == (
                SCENE, message.channel, "feedback")
            assert record["ts"] == NOW
        assert records[1]["detail"] == "HTTP 410 gone"
    assert [k for _, k, _ in h.producer.sent] == [b"s1", b"s1", b"bad1", b"bad1"]
    assert h.registry.get_sample_value("scenetrigger_deliver_feedback_total",
                                       {"kind": "failed"}) == 2


async def test_a_journey_send_publishes_its_strategy_and_step() -> None:
    h = Harness(FakeProducer(), journeys=False)
    send = SendAction("s1", "webhook", "reactivation_push_1", "reactivation", "push_1",
                      "jm-1", NOW - 1000, trigger_id="t-1")
    await h.delivery.handle_batch({("p.journey-actions", 0): [
        Record("p.journey-actions", 0, 0, orjson.dumps(action_to_dict(send)))]})
    [record] = h.producer.records(EVENTS)
    assert record == {"user_id": "s1", "ts": NOW, "type": "delivered", "message_id": "jm-1",
                      "channel": "webhook", "strategy": "reactivation", "step": "push_1",
                      "source": "feedback"}
    assert h.producer.records(JOURNEYS) == []


async def test_offsets_are_committed_only_after_the_feedback_is_acknowledged() -> None:
    h = Harness(FakeProducer(auto=False))
    task = asyncio.create_task(h.delivery.handle_batch(h.triggers("s1", "s2")))
    for _ in range(50):  # let the batch run as far as it can without acks
        await asyncio.sleep(0)
    assert len(h.producer.sent) == 4 and len(h.sender.messages) == 2
    assert h.consumer.commits == [] and not task.done()
    h.producer.ack()
    await task
    assert h.consumer.commits == [{("p.triggers", 0): 2}]
    assert h.sink.pending == 0


async def test_a_refused_feedback_send_is_sent_again_before_the_commit() -> None:
    h = Harness(FakeProducer(fail=3), journeys=False)
    await h.delivery.handle_batch(h.triggers("s1"))
    # one channel send, the feedback sent until Kafka took it, then the commit
    assert len(h.sender.messages) == 1
    assert [r["type"] for r in h.producer.records(EVENTS)] == ["delivered"] * 4
    assert h.consumer.commits == [{("p.triggers", 0): 1}]
    assert h.registry.get_sample_value(
        "scenetrigger_deliver_feedback_send_failures_total") == 3


async def test_stopping_before_the_feedback_is_acknowledged_commits_nothing() -> None:
    h = Harness(FakeProducer(fail=1_000), journeys=False)
    send = h.producer.send

    async def send_then_stop(topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        if len(h.producer.sent) == 1:  # the flush's first retry: SIGTERM meanwhile
            h.delivery.stop()
        return await send(topic, value, key)

    h.producer.send = send_then_stop  # type: ignore[method-assign]
    await h.delivery.handle_batch(h.triggers("s1"))
    assert len(h.producer.sent) == 2
    assert h.consumer.commits == []
    assert h.sink.pending == 1  # kept: a later flush (or the producer's stop) tries again


async def test_flush_keeps_failed_sends_ahead_of_newer_ones() -> None:
    producer = FakeProducer(fail=1)
    sink = KafkaFeedbackSink(producer, [EVENTS], wait=False)
    pipeline = build_pipeline(config(), "live", Sender(), channels=["webhook", "inbox"],
                              feedback=sink)
    await pipeline.deliver(Trigger(SCENE, "u1", "k", NOW), None, NOW)
    with pytest.raises(FeedbackNotAcked):
        await sink.flush()
    await pipeline.deliver(Trigger(SCENE, "u2", "k", NOW), None, NOW)
    await sink.flush()
    assert [r["user_id"] for r in producer.records(EVENTS)] == ["u1", "u2", "u1"]
    assert sink.pending == 0


def test_feedback_topics_are_the_ones_serve_and_journeys_use() -> None:
    assert feedback_topics("shop", False) == ["shop.events"]
    assert feedback_topics("shop", True) == ["shop.events", "shop.feedback"]
    assert feedback_topics(None, True) == ["scenetrigger-events", "scenetrigger-feedback"]


async def test_the_worker_and_the_shipped_scenes_take_the_feedback_records() -> None:
    """What the worker does with each record of the events topic: read it
    (``decode_event_line``, the worker's and the journeys bridge's reader)
    and hand it to the engine. Feedback is never rejected, fires none of the
    shipped scenes, and a scene on ``type: delivered`` sees it."""
    h = Harness(FakeProducer(), journeys=False)
    await h.delivery.handle_batch(h.triggers("s1", "bad1"))
    events = [decode_event_line(v) for _, _, v in h.producer.sent]
    assert [e.type for e in events] == ["delivered", "failed"]
    shipped = load_config()
    engine = Engine(shipped.scene_list(), MemoryStore(), shipped.engine.limits(),
                    track_profile=True)
    assert [t for e in events for t in engine.handle(e)] == []
    assert engine.advance(NOW + 86_400_000) == []
    on_delivery = load_config_text("""
scenes:
  got_it: {kind: arrival, when: {type: delivered}, per: channel}
""")
    engine = Engine(on_delivery.scene_list(), MemoryStore(), on_delivery.engine.limits())
    fired = [t for e in events for t in engine.handle(e)]
    assert [(t.scene, t.user_id) for t in fired] == [("got_it", "s1")]


async def test_a_cancelled_flush_keeps_every_send_it_had_not_seen_acknowledged() -> None:
    """A stop that gives up waiting on a flush (channels.infra_retry.stop_task)
    cancels it: the sends not yet acknowledged stay pending, their producer
    futures untouched, and the next flush waits for them."""
    producer = FakeProducer(auto=False)
    sink = KafkaFeedbackSink(producer, [EVENTS, JOURNEYS], wait=False)
    pipeline = build_pipeline(config(), "live", Sender(), channels=["webhook", "inbox"],
                              feedback=sink)
    await pipeline.deliver(Trigger(SCENE, "u1", "k", NOW), None, NOW)
    sent = sink.pending
    assert sent == 2  # one event on each topic
    flushing = asyncio.create_task(sink.flush())
    await asyncio.sleep(0)
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert sink.pending == sent
    assert not any(f.cancelled() for f in producer.futures)
    producer.ack()
    await sink.flush()
    assert sink.pending == 0 and len(producer.sent) == sent  # nothing sent twice
