"""One feedback vocabulary: what the feedback routes, provider callbacks, the
delivery pipeline and the demo's simulated opens emit is what strategy
branches wait for, with no translation in between."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from channels.assembly import DryRunSender, build_pipeline
from channels.feedback.decisions import feedback_record
from channels.feedback.events import (
    KINDS,
    FeedbackApp,
    ListSink,
    MemoryMessageIndex,
    MessageMeta,
    RedisMessageIndex,
    open_pixel_path,
)
from channels.feedback.kafka_sink import KafkaFeedbackSink
from config.loader import load_config
from config.strategy_models import FEEDBACK_EVENTS
from strategies.actions import ExitAction, SendAction
from strategies.embedded import JourneySubscriber, SimulatedOpens
from tests.channels.content_factories import T0
from tests.strategies.helpers import engine, sends, shipped, trigger
from triggers.events import Trigger

TOKEN = "cb-token"
SCENE_MID, JOURNEY_MID = "scene-msg", "journey-msg"
Client = TestClient[web.Request, web.Application]
# What every feedback record carries (scene or strategy/step besides, when known).
REQUIRED = {"type", "user_id", "ts", "message_id", "channel", "source"}


@pytest.fixture
async def routes() -> AsyncIterator[tuple[Client, ListSink, MemoryMessageIndex]]:
    index, sink = MemoryMessageIndex(), ListSink()
    await index.remember(SCENE_MID, MessageMeta("u1", "cart_abandonment", "email"))
    app = FeedbackApp(sink, index, b"secret", TOKEN, ["shop.example.com"], clock=lambda: 1_000)
    client = TestClient(TestServer(app.application(), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, sink, index
    finally:
        await client.close()


def test_branch_events_are_feedback_kinds() -> None:
    """What a strategy branch can wait for is what feedback emits (plus a
    shop's own ``purchased``), so no host has to translate."""
    assert set(FEEDBACK_EVENTS) - {"purchased"} <= set(KINDS)


async def test_routes_and_callbacks_emit_the_plain_kinds(
        routes: tuple[Client, ListSink, MemoryMessageIndex]) -> None:
    client, sink, _ = routes
    await client.get(open_pixel_path(b"secret", SCENE_MID))
    await client.get(f"/t/c/{SCENE_MID}?u=https%3A%2F%2Fshop.example.com%2Fp", allow_redirects=False)
    statuses = ["DELIVRD", "failed", "read", "share", "shared", "purchase"]
    resp = await client.post("/callbacks/sms", headers={"X-Callback-Token": TOKEN},
                             json=[{"message_id": SCENE_MID, "status": s} for s in statuses])
    assert (await resp.json())["accepted"] == len(statuses)
    records = [e.to_dict() for e in sink.events]
    assert [r["type"] for r in records] == [
        "opened", "clicked", "delivered", "failed", "opened", "shared", "shared", "converted"]
    for record in records:
        assert record["type"] in KINDS and not record["type"].startswith("message_")
        assert record.keys() >= REQUIRED
        assert (record["user_id"], record["channel"], record["scene"], record["message_id"]) == (
            "u1", "email", "cart_abandonment", SCENE_MID)
        assert "strategy" not in record


async def test_an_open_from_the_pixel_resolves_a_journey_branch(
        routes: tuple[Client, ListSink, MemoryMessageIndex]) -> None:
    """The pixel's event goes straight into the journey engine: the user who
    opened push_1 leaves reactivation at the first branch (goto exit)."""
    client, sink, index = routes
    journeys = engine()
    (push,) = sends(journeys.on_trigger(trigger("u9", T0)))
    await index.remember(push.message_id, MessageMeta("u9", "", push.channel, push.strategy,
                                                      push.step))
    await client.get(open_pixel_path(b"secret", push.message_id))
    (event,) = sink.events
    record = event.to_dict()
    assert (record["type"], record["strategy"], record["step"]) == (
        "opened", "reactivation", "push_1")
    assert "scene" not in record and record.keys() >= REQUIRED
    as_event = event.to_event()
    actions = journeys.on_event(as_event.__class__(as_event.user_id, T0 + 1_000,
                                                   as_event.type, as_event.fields))
    # `goto: exit` of the first branch: the run ends there.
    assert [(a.strategy, a.reason) for a in actions if isinstance(a, ExitAction)] == [
        ("reactivation", "end")]
    assert journeys.position("u9", "reactivation") is None


async def test_the_pipeline_reports_delivered_in_the_same_vocabulary() -> None:
    sink = ListSink()
    pipeline = build_pipeline(load_config(None), "dry-run", DryRunSender(), feedback=sink)
    noon = T0 + 10 * 3_600_000  # 12:00 UTC: outside the default quiet hours
    outcome = await pipeline.deliver(Trigger("promo_arrival", "u3", None, noon), None, noon)
    assert outcome.status == "delivered"
    (record,) = [e.to_dict() for e in sink.events]
    assert record["type"] == "delivered" and record.keys() >= REQUIRED
    assert record["scene"] == "promo_arrival"


async def test_simulated_opens_look_like_the_routes_opens() -> None:
    """The demo's made-up opens have the shape of a pixel's open."""
    config = load_config(None)
    opened: list[Any] = []
    sub = JourneySubscriber(config, lambda _a: None,
                            journeys=shipped(),
                            opens=SimulatedOpens(share={"push": 1.0}, min_delay_ms=1,
                                                 max_delay_ms=1),
                            on_feedback=opened.append)
    send = SendAction("u5", "push", "reactivation_push_1", "reactivation", "push_1",
                      "j|x", T0)
    await sub._emit([send], T0)
    await sub.tick(T0 + 10)
    (event,) = opened
    assert event.type == "opened" and event.fields["type"] == "opened"
    assert event.fields.keys() >= REQUIRED
    assert (event.fields["strategy"], event.fields["step"], event.fields["source"]) == (
        "reactivation", "push_1", "simulated")


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, value, key))


async def test_serve_writes_the_same_record_to_events_and_journey_feedback() -> None:
    producer = _Producer()
    event = MessageMeta("u1", "", "push", "reactivation", "push_1").event("clicked", "m", 5)
    await KafkaFeedbackSink(producer, ["ev", "fb"]).emit(event)
    await KafkaFeedbackSink(producer, ["ev2"], decisions="dec").emit(event)
    assert [t for t, _, _ in producer.sent] == ["ev", "fb", "ev2", "dec"]
    assert len({v for t, v, _ in producer.sent if t != "dec"}) == 1
    assert orjson.loads(producer.sent[0][1])["type"] == "clicked"
    assert producer.sent[3][1] == feedback_record(event).encode()
    assert {k for _, _, k in producer.sent} == {b"u1"}


class _Refusing(_Producer):
    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        if topic == "fb":
            raise RuntimeError("broker refused")
        await super().send_and_wait(topic, value, key)


async def test_a_waiting_sink_raises_when_kafka_refuses_and_keeps_nothing() -> None:
    producer = _Refusing()
    sink = KafkaFeedbackSink(producer, ["ev", "fb"])
    event = MessageMeta("u1", "s", "push").event("opened", "m", 5)
    with pytest.raises(RuntimeError, match="broker refused"):
        await sink.emit(event)  # serve answers the request with an error
    assert [t for t, _, _ in producer.sent] == ["ev"] and sink.pending == 0


@pytest.mark.integration
async def test_redis_index_keeps_strategy_and_step_and_reads_old_entries(
        redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    prefix = f"v{uuid.uuid4().hex[:8]}:"
    try:
        index = RedisMessageIndex(client, prefix, ttl_ms=60_000)
        meta = MessageMeta("u1", "", "wechat", "reactivation", "sms_and_wechat")
        await index.remember("j1", meta)
        assert await index.lookup("j1") == meta
        await client.set(f"{prefix}msg:old", orjson.dumps(["u2", "promo_arrival", "inbox"]))
        assert await index.lookup("old") == MessageMeta("u2", "promo_arrival", "inbox")
    finally:
        await client.aclose()
