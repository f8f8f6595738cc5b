"""Review finding: triggers and events are separate topics, so the journeys
bridge may read a trigger from before a user's erasure after the erase event.
It must not build the erased user's journey state or churn watch again: the
service reads the user's erasure receipt first (as the console and explain
do). Real Redis; the receipt's name is computed here from the documented
formula (config/hash_keys.py)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest
import redis.asyncio as aioredis

from config.hash_keys import HASH_KEY_ENV
from strategies.actions import HandoffAction, SendAction
from strategies.bridge import BridgeTopics, JourneyBridge
from strategies.service import JourneyService, journeys_key
from strategies.store import RedisTagStore
from tests.config.test_hash_keys import K1, keyed_subject
from tests.strategies.helpers import DAY, T0, trigger
from tests.strategies.test_churn_watch import CONFIG, buyer
from triggers.wire import encode_trigger

EVENTS = "t.events"
TOPICS = BridgeTopics(triggers="t.triggers", actions="t.actions", events=EVENTS)
RECEIPTS = CONFIG.delivery.redis_prefix  # where Eraser keeps receipts


@dataclass
class Record:
    topic: str
    value: bytes
    offset: int = 0


@pytest.mark.integration
async def test_a_trigger_read_after_the_erasure_rebuilds_nothing(
        client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, K1)
    sent: list[SendAction | HandoffAction] = []

    async def send(action: SendAction | HandoffAction) -> None:
        sent.append(action)

    service = JourneyService(CONFIG, client, RedisTagStore(client, "t25:"), send, prefix="t25:",
                             clock=lambda: T0 + 40 * DAY)
    bridge = JourneyBridge(service, None, TOPICS)
    await service.start()
    fired = T0 + 31 * DAY  # the trigger fired before the erasure ...
    erased = T0 + 32 * DAY
    # ... scenetrigger erase: Redis cleared, the erase event, then the receipt
    await bridge._take(Record(EVENTS, orjson.dumps(
        {"user_id": "u", "ts": erased, "type": "erase"})))
    await client.set(f"{RECEIPTS}erasure:{keyed_subject(K1, 'u')}",
                     orjson.dumps({"erased_at_ms": erased, "removed": {}}))
    # ... and is read after it (another topic, another partition)
    await bridge._take(Record(TOPICS.triggers, encode_trigger(
        trigger("u", fired, "cart_abandonment"), fired, buyer("u", 0, 10, 20, 30).profile)))
    assert not await client.hexists(journeys_key("t25:"), "u"), "journey state came back"
    assert len(service.churn) == 0, "the churn watch holds the erased user again"
    assert sent == []
    # a trigger from after the erasure (the user came back) is acted on
    back = erased + 1
    await bridge._take(Record(TOPICS.triggers, encode_trigger(
        trigger("u", back, "cart_abandonment"), back, buyer("u", 0, 10, 20, 30).profile)))
    assert await client.hexists(journeys_key("t25:"), "u")
    assert len(service.churn) == 1

