"""A goal met by a clickstream event exits the journey live (issue 24.3):
the journey bridge reads the events topic too, on real Kafka and Redis.

Triggers go on the triggers topic as the scene worker writes them
(:func:`triggers.wire.encode_trigger`); the purchase arrives on the events
topic inside a batch record (as the collector writes it) with a feedback
event that the bridge must leave to the feedback topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.producer import ensure_topics
from channels.feedback.decisions import MemoryDecisionLog
from config.loader import load_config
from strategies.bridge import BridgeTopics, JourneyBridge
from strategies.service import JourneyService
from strategies.store import RedisTagStore
from tests.agents.worker_support import unique
from triggers.events import Trigger
from triggers.wire import encode_trigger

WAIT_S = 3
STRATEGY = {"entry": {"scene": "repeat_view_no_purchase"},
            "goal": {"event": "purchase", "within": "1h"},
            "steps": [{"id": "first", "send": {"channel": "push", "content": "reactivation_push_1"}},
                      {"id": "pause", "wait": f"{WAIT_S}s"},
                      {"id": "second", "send": {"channel": "push", "content": "reactivation_push_2"}},
                      {"id": "rest", "wait": "1h"}]}
SCENES = {"repeat_view_no_purchase": {"kind": "repeat", "when": {"type": "view"},
                                      "count": 3, "within": "30m"}}
STEP_S = 30  # each set-up step and send: a hang names its step, within the test's limit


async def step(what: str, awaitable: Any) -> Any:
    """``awaitable`` within STEP_S, else a failure naming ``what`` (a loaded
    run once spent the whole 180 s somewhere the waits below did not say)."""
    try:
        return await asyncio.wait_for(awaitable, STEP_S)
    except TimeoutError:
        raise AssertionError(f"{what} took over {STEP_S} s") from None


async def _run(bootstrap: str, redis_url: str, config_path: Path, prefix: str
               ) -> tuple[list[Any], MemoryDecisionLog, JourneyService]:
    topics = BridgeTopics(f"{prefix}.triggers", f"{prefix}.journey-actions",
                          f"{prefix}.feedback", f"{prefix}.events")
    await step("ensure_topics", ensure_topics(bootstrap, JourneyBridge.subscriptions_of(topics)))
    client = aioredis.Redis.from_url(redis_url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(*JourneyBridge.subscriptions_of(topics),
                                bootstrap_servers=bootstrap, group_id=f"{prefix}-journeys",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await step("producer.start", producer.start())
    await step("consumer.start", consumer.start())
    sent: list[Any] = []

    async def send(action: Any) -> None:
        sent.append(action)

    log = MemoryDecisionLog()
    service = JourneyService(load_config(config_path), client,
                             RedisTagStore(client, f"{prefix}:"), send, prefix=f"{prefix}:",
                             decisions=log)
    await step("service.start", service.start())
    bridge = JourneyBridge(service, consumer, topics, tick_interval_s=0.2)
    task = asyncio.create_task(bridge.run())

    async def until(what: str, done: Any, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; taken {bridge.taken}, "
                                     f"sent {sent}, decisions {list(log.records)}")
            await asyncio.sleep(0.1)

    try:
        now = time.time_ns() // 1_000_000
        for user in ("buyer", "stay"):
            trig = Trigger("repeat_view_no_purchase", user, None, now)
            await step(f"sending {user}'s trigger", producer.send_and_wait(
                topics.triggers, encode_trigger(trig, now), key=user.encode()))
        await until("the first sends", lambda: {a.user_id for a in sent} == {"buyer", "stay"},
                    STEP_S)
        # one batch record: an open (the feedback topic's business: skipped here),
        # the buyer's purchase and a view of the other user
        batch = [{"user_id": "buyer", "ts": now + 1, "type": "opened", "channel": "push"},
                 {"user_id": "buyer", "ts": now + 2, "type": "purchase", "price": 9.5},
                 {"user_id": "stay", "ts": now + 2, "type": "view", "product_id": "p1"}]
        await step("sending the events", producer.send_and_wait(
            topics.events, orjson.dumps(batch), key=b"buyer"))
        await until("the goal exit", lambda: service.engine.position("buyer", "j") is None,
                    STEP_S)
        await until("the second send", lambda: len(sent) == 3, WAIT_S + 30)
        return sent, log, service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
        await client.aclose()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_purchase_on_the_events_topic_exits_the_journey_live(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    config_path = tmp_path / "goal.yaml"
    config_path.write_text(yaml.safe_dump({"scenes": SCENES,
                                           "strategies": {"journeys": {"j": STRATEGY}}}))
    sent, log, service = asyncio.run(_run(kafka_bootstrap, redis_url, config_path,
                                          unique("t-goal")))
    assert sorted((a.user_id, a.step) for a in sent) == [
        ("buyer", "first"), ("stay", "first"), ("stay", "second")]
    exits = [(r.user_id, r.rule, r.figures) for r in log.records if r.outcome == "exited"]
    assert exits == [("buyer", "goal", "at step pause")]
    assert service.engine.position("stay", "j") == (1, "rest")
    # the open on the events topic was not taken (it would count in the user's opens)
    assert service.engine.store.get("buyer") is not None
    assert service.engine.store.get("buyer").opens == {}  # type: ignore[union-attr]
