"""JourneyService over a real Redis: positions survive a restart of the
service in the middle of a wait; tags and scores land in the tag store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from config.loader import load_config_text
from strategies.actions import HandoffAction, SendAction
from strategies.service import JourneyService
from strategies.store import RedisTagStore
from tests.services import start_redis
from tests.strategies.helpers import DAY, HOUR, T0, trigger
from triggers.events import Event

CONFIG = load_config_text("""
scenes:
  repeat_view_no_purchase: {kind: repeat, when: {type: view}, per: product_id, count: 3,
                            within: 30m}
  cart_abandonment: {kind: absence, start: {type: cart}, after: 30m}
strategies:
  include: [reactivation]
  scoring: {points: {opened: 30, clicked: 30}, half_life: 7d, threshold: 50,
            handoff: {channel: crm_webhook}}
""")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def service(client: aioredis.Redis, clock: Clock,
            sent: list[SendAction | HandoffAction]) -> JourneyService:
    async def send(action: SendAction | HandoffAction) -> None:
        sent.append(action)

    return JourneyService(CONFIG, client, RedisTagStore(client, "t6s:"), send, prefix="t6s:",
                          clock=clock)


@pytest.mark.integration
async def test_a_restart_in_the_middle_of_a_wait_keeps_the_position(
        client: aioredis.Redis) -> None:
    clock = Clock()
    sent: list[SendAction | HandoffAction] = []
    first = service(client, clock, sent)
    assert await first.start() == 0
    await first.on_trigger(trigger("u1", T0))
    assert [(s.user_id, s.channel) for s in sent] == [("u1", "push")]
    clock.now = T0 + DAY
    await first.tick()
    del first  # the process dies in the middle of the 2-day wait
    second = service(client, clock, sent)
    assert await second.start() == 1
    clock.now = T0 + 2 * DAY + 1
    await second.tick()
    assert [(s.channel, s.content_ref, s.ts) for s in sent[1:]] == [
        ("push", "reactivation_push_2", T0 + 2 * DAY)]
    clock.now = T0 + 4 * DAY + 1
    await second.tick()
    wechat = next(s for s in sent if isinstance(s, SendAction) and s.channel == "wechat")
    await second.on_feedback(Event("u1", T0 + 4 * DAY + HOUR, "opened", {
        "type": "opened", "channel": "wechat", "message_id": wechat.message_id}))
    tags = await RedisTagStore(client, "t6s:").tags("u1")
    assert "prefers_wechat" in tags
    score = await RedisTagStore(client, "t6s:").score("u1")
    assert score is not None and score.value == 30.0
    await second.on_feedback(Event("u1", T0 + 4 * DAY + 2 * HOUR, "clicked", {
        "type": "clicked", "channel": "wechat", "message_id": wechat.message_id}))
    handoffs = [s for s in sent if isinstance(s, HandoffAction)]
    assert [(h.user_id, h.channel) for h in handoffs] == [("u1", "crm_webhook")]
    reg = second.metrics.registry
    assert reg.get_sample_value("scenetrigger_lead_handoffs_total",
                                {"channel": "crm_webhook"}) == 1
    assert reg.get_sample_value("scenetrigger_strategy_sends_total", {
        "strategy": "reactivation", "step": "sms_and_wechat", "channel": "wechat"}) == 1
    # a third service sees the user out of the journey and nothing more to send
    third = service(client, clock, sent)
    assert await third.start() == 0
    before = len(sent)
    clock.now = T0 + 30 * DAY
    await third.tick()
    assert len(sent) == before


@pytest.mark.integration
async def test_each_journey_step_is_a_decision_record(client: aioredis.Redis) -> None:
    from channels.feedback.decisions import MemoryDecisionLog

    clock = Clock()
    sent: list[SendAction | HandoffAction] = []
    log = MemoryDecisionLog()
    svc = service(client, clock, sent)
    svc.decisions = log
    await svc.start()
    await svc.on_trigger(trigger("u1", T0))
    await svc.on_trigger(trigger("u1", T0 + HOUR))  # already inside: not enrolled again
    push = sent[0]
    assert isinstance(push, SendAction)
    await svc.on_feedback(Event("u1", T0 + 2 * HOUR, "clicked", {
        "type": "clicked", "channel": "push", "message_id": push.message_id}))
    texts = [(r.scene, r.outcome, r.text()) for r in log.records]
    assert texts[:3] == [
        ("journey:reactivation", "enrolled", "enrolled: via repeat_view_no_purchase, version 1"),
        ("journey:reactivation", "step",
         "step: push_1: reactivation_push_1 on push"),
        ("journey:reactivation", "suppressed", "in_progress: entry via repeat_view_no_purchase")]
    assert log.records[1].message_id == push.message_id
    assert all(r.user_id == "u1" for r in log.records)


@pytest.mark.integration
async def test_a_full_redis_holds_the_step_until_it_takes_the_write(tmp_path: Path) -> None:
    """Issue 19: a Redis out of memory used to end `journeys`; the step now
    waits (counted), and its position is written once Redis takes writes."""
    server = start_redis(tmp_path / "redis")
    redis = aioredis.Redis.from_url(server.url)
    try:
        sent: list[SendAction | HandoffAction] = []
        host = service(redis, Clock(), sent)
        host.waiter.base_s = host.waiter.max_s = 0.05
        await host.start()
        refused = asyncio.Event()
        count = host.waiter.count

        def counted(exc: BaseException) -> None:
            count(exc)
            refused.set()

        host.waiter.count = counted  # type: ignore[method-assign]
        await redis.config_set("maxmemory-policy", "noeviction")
        await redis.config_set("maxmemory", "1")  # every write refused: OOM
        step = asyncio.create_task(host.on_trigger(trigger("u1", T0)))
        await asyncio.wait_for(refused.wait(), 30)
        assert not step.done()
        assert await redis.hget("t6s:journeys", "u1") is None
        await redis.config_set("maxmemory", "0")
        await asyncio.wait_for(step, 30)
        assert await redis.hget("t6s:journeys", "u1") is not None
        assert [(s.user_id, s.channel) for s in sent] == [("u1", "push")]
        assert (host.metrics.registry.get_sample_value(
            "scenetrigger_infra_errors_total", {"component": "journeys", "fault": "oom"})
            or 0) >= 1
    finally:
        await redis.aclose()
        server.stop()


@pytest.mark.integration
async def test_an_erased_user_starts_from_no_score(client: aioredis.Redis) -> None:
    """After scenetrigger erase (the score key deleted, the erase event on
    the events topic) the service's cached score is gone too: the user's
    next open scores 30 from nothing, not on top of the erased 30 (which
    crossed 50 and handed them to sales)."""
    clock, sent = Clock(), list[SendAction | HandoffAction]()
    svc = service(client, clock, sent)
    tags = RedisTagStore(client, "t6s:")
    opened = {"user_id": "u", "ts": T0, "type": "opened"}
    await svc.on_feedback(Event("u", T0, "opened", opened))
    assert (await tags.score("u")).value == 30  # type: ignore[union-attr]
    await client.delete(tags.score_key("u"))  # what Eraser.erase removes
    erase = {"user_id": "u", "ts": T0 + 1, "type": "erase"}
    await svc.on_clickstream(Event("u", T0 + 1, "erase", erase))
    await svc.on_feedback(Event("u", T0 + 2, "opened", {**opened, "ts": T0 + 2}))
    assert (await tags.score("u")).value == 30  # type: ignore[union-attr]
    assert [a for a in sent if isinstance(a, HandoffAction)] == []
