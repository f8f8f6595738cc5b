"""Churn tags as the clock moves: the watch finds when a silent buyer's tags
change (checked against strategies.tags.churn_tags on the profile itself),
and the running services (journeys service over real Redis, the embedded
subscriber) set them then and enrol the user in the shipped winback."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from config.loader import load_config_text
from strategies.actions import Action, EnrolAction, HandoffAction, SendAction
from strategies.churn_watch import HOUR_MS, ChurnWatch
from strategies.embedded import JourneySubscriber
from strategies.service import JourneyService
from strategies.store import RedisTagStore
from strategies.tags import churn_tags
from tests.strategies.helpers import DAY, T0, trigger
from triggers.churn import CHURN_RISK_HIGH, CHURNED
from triggers.events import Event, Trigger
from triggers.state import UserState

CONFIG = load_config_text("""
scenes:
  repeat_view_no_purchase: {kind: repeat, when: {type: view}, per: product_id, count: 3,
                            within: 30m}
  cart_abandonment: {kind: absence, start: {type: cart}, after: 30m}
  browse: {kind: arrival, when: {type: page}}   # enters no strategy
strategies:
  include: [reactivation]
""")
RULES = CONFIG.strategies.tags


def buyer(user: str, *days: int) -> UserState:
    state = UserState()
    for day in days:
        state.profile.update(Event(user, T0 + day * DAY, "purchase", {"price": 20}))
    return state


def test_the_watch_finds_the_hours_the_tags_change() -> None:
    state = buyer("u", 0, 10, 20, 30)
    watch = ChurnWatch(RULES)
    now = T0 + 31 * DAY
    assert watch.observe("u", state.profile, now) == frozenset()
    changes = []
    clock = now
    while len(watch):
        clock += 5 * DAY
        changes += [(clock, tags) for _, tags in watch.due(clock)]
    assert [tags for _, tags in changes] == [frozenset({CHURN_RISK_HIGH}),
                                             frozenset({CHURN_RISK_HIGH, CHURNED})]
    # The model on the profile itself agrees, to the hour.
    watch = ChurnWatch(RULES)
    watch.observe("u", state.profile, now)
    first = watch._next["u"]
    assert churn_tags(state.profile, RULES, first - HOUR_MS) == frozenset()
    assert churn_tags(state.profile, RULES, first) == frozenset({CHURN_RISK_HIGH})


def test_no_purchase_no_watch_and_a_new_purchase_moves_it() -> None:
    watch = ChurnWatch(RULES)
    assert watch.observe("n", UserState().profile, T0) == frozenset() and len(watch) == 0
    state = buyer("u", 0, 10)
    watch.observe("u", state.profile, T0 + 11 * DAY)
    before = watch._next["u"]
    state.profile.update(Event("u", T0 + 60 * DAY, "purchase", {"price": 5}))
    watch.observe("u", state.profile, T0 + 61 * DAY)
    assert watch._next["u"] > before
    assert watch.due(before) == []  # the old entry is stale


@dataclass
class Record:
    trigger: Trigger
    fired_ms: int
    via: str = "event"


async def test_the_embedded_runtime_enrols_a_silent_buyer_in_winback() -> None:
    states = {"u": buyer("u", 0, 10, 20, 30), "fresh": UserState()}
    actions: list[Action] = []
    sub = JourneySubscriber(CONFIG, actions.append, states=states.get)
    await sub(Record(Trigger("browse", "u", None, T0 + 31 * DAY), T0 + 31 * DAY))
    assert not any(isinstance(a, EnrolAction) and a.strategy == "winback" for a in actions)
    await sub.tick(T0 + 3 * 365 * DAY)
    winback = [a for a in actions if isinstance(a, EnrolAction) and a.strategy == "winback"]
    assert [a.user_id for a in winback] == ["u"]
    assert sub.engine.store.get("u") is not None
    assert CHURNED in sub.engine.store.get("u").tags  # type: ignore[union-attr]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.mark.integration
async def test_the_journeys_service_tags_and_enrols_as_the_clock_moves(
        client: aioredis.Redis) -> None:
    clock = Clock()
    sent: list[SendAction | HandoffAction] = []

    async def send(action: SendAction | HandoffAction) -> None:
        sent.append(action)

    tags = RedisTagStore(client, "t23:")
    service = JourneyService(CONFIG, client, tags, send, prefix="t23:", clock=clock)
    await service.start()
    clock.now = T0 + 31 * DAY
    await service.on_profile("u", buyer("u", 0, 10, 20, 30).profile)
    await service.on_trigger(trigger("u", clock.now, "browse"))
    assert await tags.tags("u") == frozenset()
    ticks = 0
    while CHURNED not in await tags.tags("u"):
        clock.now += 10 * DAY
        await service.tick()
        ticks += 1
        assert ticks < 200, "never churned"
    assert CHURN_RISK_HIGH in await tags.tags("u")
    clock.now += 8 * DAY  # winback waits a week, then emails its offer
    await service.tick()
    assert [(s.strategy, s.channel) for s in sent if isinstance(s, SendAction)
            and s.strategy == "winback"] == [("winback", "email")]


@pytest.mark.integration
async def test_an_erased_buyer_gets_no_churn_tags_or_winback_back(
        client: aioredis.Redis) -> None:
    """scenetrigger erase deletes the tags key (Eraser) and puts an erase
    event on the events topic, which the bridge hands to on_clickstream: the
    churn watch must forget the buyer too, or its ticker writes their churn
    tags (a key naming them) again and enrols them in winback."""
    clock = Clock()
    sent: list[SendAction | HandoffAction] = []

    async def send(action: SendAction | HandoffAction) -> None:
        sent.append(action)

    tags = RedisTagStore(client, "t24:")
    service = JourneyService(CONFIG, client, tags, send, prefix="t24:", clock=clock)
    await service.start()
    clock.now = T0 + 31 * DAY
    await service.on_profile("u", buyer("u", 0, 10, 20, 30).profile)
    await client.delete(tags.tags_key("u"))  # what Eraser.erase removes
    await service.on_clickstream(Event("u", clock.now, "erase",
                                       {"user_id": "u", "ts": clock.now, "type": "erase"}))
    for _ in range(60):
        clock.now += 10 * DAY
        await service.tick()
    assert await client.exists(tags.tags_key("u")) == 0, "the erased buyer's tags came back"
    assert sent == []
