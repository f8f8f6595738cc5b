"""Review finding: an audience step whose record could not be sent must not
be remembered as done. Audience steps now write only what changes the
membership (strategies/journeys.py ``_audience``), so a membership that the
journey state holds but the topic never got is never written again.

The ticker (``JourneyService.run_ticker``) logs and survives a failed tick;
the engine has already put the audience in the user's journey state, and the
next flush of positions persists it."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from config.loader import load_config_text
from strategies.actions import HandoffAction, SendAction
from strategies.service import JourneyService
from strategies.store import RedisTagStore
from tests.strategies.test_audience_steps import CONFIG as WINBACK_TEXT
from triggers.audiences.record import AudienceChange
from triggers.events import Trigger

T0 = 1_700_000_000_000
DAY = 86_400_000
CONFIG = load_config_text("""
scenes:
  cart_abandonment: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
  search_abandonment: {kind: absence, start: {type: search}, after: 30m}
audiences:
  retarget: {journey: true}
strategies:
  journeys:
    winback:
      entry: {scene: cart_abandonment}
      steps:
        - send: {channel: email, content: winback_offer}
        - branch: {within: 1d, when: [{event: purchased, goto: exit}]}
        - audience: {add: retarget}
    searchers:
      entry: {scene: search_abandonment}
      steps:
        - audience: {add: retarget}
""")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class FlakyTopic:
    """PREFIX.audiences that refuses the first send (a Kafka timeout)."""

    def __init__(self) -> None:
        self.refusals = 1
        self.written: list[AudienceChange] = []

    async def __call__(self, change: AudienceChange) -> None:
        if self.refusals:
            self.refusals -= 1
            raise TimeoutError("audiences topic: request timed out")
        self.written.append(change)


@pytest.mark.integration
async def test_a_refused_audience_record_is_written_by_the_next_add(
        client: aioredis.Redis) -> None:
    clock, topic = Clock(), FlakyTopic()
    sent: list[SendAction | HandoffAction] = []

    async def send(action: SendAction | HandoffAction) -> None:
        sent.append(action)

    service = JourneyService(CONFIG, client, RedisTagStore(client, "rv:"), send, prefix="rv:",
                             clock=clock, audiences=topic)
    await service.start()
    await service.on_trigger(Trigger("cart_abandonment", "u", None, T0))
    clock.now = T0 + DAY + 1
    with pytest.raises(TimeoutError):  # run_ticker logs this and goes on
        await service.tick()
    assert topic.written == []
    # Another journey adds the same audience: the user is in no audience on
    # the topic, so this step must write the enter.
    clock.now = T0 + DAY + 2
    await service.on_trigger(Trigger("search_abandonment", "u", None, clock.now))
    assert [(c.audience, c.user_id, c.op) for c in topic.written] == [("retarget", "u", "enter")]


WINBACK = load_config_text(WINBACK_TEXT)  # the shipped shape of test_audience_steps


@pytest.mark.integration
async def test_an_erased_user_gets_no_journey_state_or_audience_record_back(
        client: aioredis.Redis) -> None:
    from strategies.service import journeys_key
    from triggers.events import Event

    clock, topic = Clock(), FlakyTopic()
    topic.refusals = 0

    async def send(action: SendAction | HandoffAction) -> None:
        pass

    service = JourneyService(WINBACK, client, RedisTagStore(client, "rv:"), send, prefix="rv:",
                             clock=clock, audiences=topic)
    await service.start()
    await service.on_trigger(Trigger("cart_abandonment", "u", None, T0))
    clock.now = T0 + DAY + 1
    await service.tick()
    assert [(c.audience, c.op) for c in topic.written] == [("retarget", "enter")]
    # scenetrigger erase: the journey field goes (Eraser.erase: hdel), the
    # worker tombstones retarget|u, and the erase event is on the events
    # topic, which the bridge hands to on_clickstream.
    await client.hdel(journeys_key("rv:"), "u")
    erased_at = T0 + DAY + 2
    await service.on_clickstream(Event("u", erased_at, "erase",
                                       {"user_id": "u", "ts": erased_at, "type": "erase"}))
    topic.written.clear()
    clock.now = T0 + 2 * DAY
    await service.on_clickstream(Event("u", clock.now, "purchase",
                                       {"user_id": "u", "ts": clock.now, "type": "purchase"}))
    await service.tick()
    assert not await client.hexists(journeys_key("rv:"), "u"), "the erased state came back"
    assert topic.written == [], "a record of the erased user after its tombstone"
