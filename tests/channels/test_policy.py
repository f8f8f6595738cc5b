"""Delivery policy over a simulated week (fake clock), with the in-memory store
and with a real Redis server."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from channels.policy.decide import DeliveryPolicy, DeliveryRequest, PolicyMetrics
from channels.policy.store import MemoryPolicyStore, PolicyStore, RedisPolicyStore
from config.delivery_models import BackoffModel, CapModel, DeliveryModel, QuietHoursModel
from tests.redis_keys import bucket_tag

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR = 3_600_000
MONDAY = int(datetime(2019, 9, 30, tzinfo=SHANGHAI).timestamp() * 1000)


def week_model(prefix: str = "st:") -> DeliveryModel:
    return DeliveryModel(default_timezone="Asia/Shanghai", caps=CapModel(per_day=3, per_week=10),
                         backoff=BackoffModel(ignored=1000), redis_prefix=prefix)


def request(tid: str, ts: int, user: str = "u1", channels: tuple[str, ...] = ("inbox",),
            tz: str | None = None) -> DeliveryRequest:
    return DeliveryRequest(tid, user, "s", None, ts, channels, tz)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def simulate_week(store: PolicyStore, prefix: str = "st:") -> tuple[list[int], Counter[str]]:
    """One trigger every hour for a week (Mon 00:17 to Sun 23:17 local);
    returns the times messages were sent and the suppression counts."""
    registry = CollectorRegistry()
    policy = DeliveryPolicy(week_model(prefix), store, PolicyMetrics.on(registry))
    sent: list[int] = []
    for hour in range(7 * 24):
        now = MONDAY + hour * HOUR + 17 * 60_000
        for released in await policy.release_due(now):
            again = await policy.decide(released.request, now, released=True)
            if again.action == "send":
                sent.append(now)
            if again.leased:  # sent: the pipeline ends the lease
                await policy.done(released.request.trigger_id, released.request.user_id)
        decision = await policy.decide(request(f"t{hour}", now), now)
        if decision.leased:
            await policy.done(f"t{hour}", request(f"t{hour}", now).user_id)
        if decision.action == "send":
            sent.append(now)
        elif decision.action == "defer":
            local = datetime.fromtimestamp(decision.due_ms / 1000, SHANGHAI)  # type: ignore[operator]
            assert (local.hour, local.minute) == (8, 0)
    total = sum(v for k, v in policy.suppressed.items())
    metric = sum(registry.get_sample_value("scenetrigger_suppressed_total", {"reason": r}) or 0
                 for r in policy.suppressed)
    assert metric == total and policy.deferred > 0
    return sent, policy.suppressed


def check_week(sent: list[int], suppressed: Counter[str]) -> None:
    local = [datetime.fromtimestamp(ms / 1000, SHANGHAI) for ms in sent]
    assert all(8 <= t.hour < 22 for t in local), "a message went out in quiet hours"
    per_day = Counter(t.date() for t in local)
    assert max(per_day.values()) <= 3
    assert len(sent) == 10  # the weekly cap binds before 7 x 3
    assert list(per_day.values()) == [3, 3, 3, 1]
    assert suppressed["cap_day"] > 0 and suppressed["cap_week"] > 0
    assert set(suppressed) <= {"cap_day", "cap_week"}


async def test_caps_and_quiet_hours_hold_over_a_simulated_week() -> None:
    sent, suppressed = await simulate_week(MemoryPolicyStore())
    check_week(sent, suppressed)


@pytest.mark.integration
async def test_caps_and_quiet_hours_hold_over_a_simulated_week_in_redis(
        redis_client: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    sent, suppressed = await simulate_week(RedisPolicyStore(redis_client), prefix)
    check_week(sent, suppressed)
    # Sun 22:17, 23:17 wait, in u1's bucket
    assert await redis_client.zcard(f"{prefix}deferred:{bucket_tag('u1')}") == 2
    for key in await redis_client.keys(f"{prefix}deferred:*"):  # no other bucket
        assert str(key).startswith(f"{prefix}deferred:{bucket_tag('u1')}")
    ttl = await redis_client.pttl(next(iter(await redis_client.keys(f"{prefix}cap:*"))))
    assert 0 < ttl <= 8 * 24 * HOUR


async def dedupe_case(store: PolicyStore, prefix: str = "st:") -> None:
    policy = DeliveryPolicy(week_model(prefix), store)
    now = MONDAY + 10 * HOUR
    first = await policy.decide(request("same", now), now)
    again = await policy.decide(request("same", now), now + 1000)
    assert (first.action, again.action, again.reason) == ("send", "suppress", "duplicate")
    assert (await policy.decide(request("other", now), now)).action == "send"


async def test_duplicate_trigger_is_delivered_once() -> None:
    await dedupe_case(MemoryPolicyStore())


@pytest.mark.integration
async def test_duplicate_trigger_is_delivered_once_in_redis(redis_client: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await dedupe_case(RedisPolicyStore(redis_client), prefix)
    claim = f"{prefix}dd:{bucket_tag('u1')}:same"  # beside u1's bucket: one slot
    assert await redis_client.exists(claim) == 1
    assert 0 < await redis_client.pttl(claim) <= 7 * 24 * HOUR


async def test_stale_triggers_are_dropped_not_deferred() -> None:
    policy = DeliveryPolicy(week_model(), MemoryPolicyStore())
    now = MONDAY + 10 * HOUR
    assert (await policy.decide(request("old", now - 13 * HOUR), now)).reason == "stale"
    # 21:30 local with an 11h-old trigger: waiting to 08:00 would exceed 12h
    late = MONDAY + 23 * HOUR + 30 * 60_000
    decision = await policy.decide(request("late", late - 11 * HOUR), late)
    assert decision.reason == "stale"
    fresh = await policy.decide(request("fresh", late), late)
    assert fresh.action == "defer"
    assert await policy.deferred_count() == 1


async def test_quiet_hours_use_the_users_own_zone() -> None:
    policy = DeliveryPolicy(week_model(), MemoryPolicyStore())
    now = MONDAY + 10 * HOUR  # 10:00 Shanghai = 22:00 the day before in New York
    assert (await policy.decide(request("a", now), now)).action == "send"
    ny = await policy.decide(request("b", now, user="u2", tz="America/New_York"), now)
    assert ny.action == "defer"
    wake = datetime.fromtimestamp(ny.due_ms / 1000, ZoneInfo("America/New_York"))  # type: ignore[operator]
    assert (wake.hour, wake.minute) == (8, 0)


async def test_quiet_hours_can_be_switched_off() -> None:
    model = week_model().model_copy(update={"quiet_hours": QuietHoursModel(enabled=False)})
    policy = DeliveryPolicy(model, MemoryPolicyStore())
    night = MONDAY + 3 * HOUR
    assert (await policy.decide(request("n", night), night)).action == "send"


async def test_channel_cap_falls_over_to_the_next_preferred_channel() -> None:
    model = week_model().model_copy(update={
        "channel_caps": {"email": CapModel(per_day=1)}})
    policy = DeliveryPolicy(model, MemoryPolicyStore())
    now = MONDAY + 10 * HOUR
    pref = ("email", "inbox")
    got = [(await policy.decide(request(f"t{i}", now, channels=pref), now)).channel
           for i in range(3)]
    assert got == ["email", "inbox", "inbox"]
    only_email = await policy.decide(request("t9", now, user="u3", channels=("email",)), now)
    assert only_email.action == "send"
    capped = await policy.decide(request("t10", now, user="u3", channels=("email",)), now)
    assert capped.reason == "channel_cap"
    none = await policy.decide(request("t11", now, user="u4", channels=()), now)
    assert none.reason == "no_channel"


async def backoff_case(store: PolicyStore, prefix: str = "st:") -> None:
    model = week_model(prefix).model_copy(update={
        "backoff": BackoffModel(ignored=2, pause=24 * HOUR), "caps": CapModel()})
    policy = DeliveryPolicy(model, store)
    now = MONDAY + 9 * HOUR
    results: list[Any] = []
    for i in range(3):
        decision = await policy.decide(request(f"b{i}", now + i), now + i)
        results.append(decision.action if decision.action == "send" else decision.reason)
        if decision.action == "send":
            await policy.record_sent("u1", now + i)
    assert results == ["send", "send", "backoff"]
    await policy.record_engaged("u1")  # an open or a click
    for i in (3, 4):
        assert (await policy.decide(request(f"b{i}", now + 10 + i), now + 10 + i)).action == "send"
        await policy.record_sent("u1", now + 10 + i)
    assert (await policy.decide(request("b6", now + 20), now + 20)).reason == "backoff"
    later = now + 24 * HOUR + 20
    assert (await policy.decide(request("b5", later), later)).action == "send"  # one probe


async def test_backoff_after_ignored_messages_and_reset_by_engagement() -> None:
    await backoff_case(MemoryPolicyStore())


@pytest.mark.integration
async def test_backoff_in_redis(redis_client: Redis) -> None:
    await backoff_case(RedisPolicyStore(redis_client), f"t{uuid.uuid4().hex[:8]}:")


@pytest.mark.integration
async def test_concurrent_reservations_never_exceed_the_cap(redis_client: Redis) -> None:
    import asyncio

    store = RedisPolicyStore(redis_client)
    key = f"t{uuid.uuid4().hex[:8]}:cap"
    results = await asyncio.gather(*(store.reserve([(key, 5, 60_000)], 0) for _ in range(40)))
    assert results.count(-1) == 5 and await redis_client.get(key) == "5"


@pytest.mark.parametrize("section,needle", [
    ({"default_timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"quiet_hours": {"start": "25:00"}}, "bad time of day"),
    ({"caps": {"per_day": -1}}, "per_day"),
    ({"max_age": "soon"}, "bad duration"),
    ({"frequency": 3}, "unknown field"),
])
def test_delivery_config_errors_name_section_and_field(section: dict[str, Any],
                                                       needle: str) -> None:
    from config.loader import validate_config
    from triggers.errors import ConfigError

    raw = {"scenes": {"s": {"kind": "arrival", "when": {"type": "view"}}}, "delivery": section}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    text = "\n".join(err.value.problems)
    assert "'delivery'" in text and needle in text


class ReserveFailsOnce(MemoryPolicyStore):
    """The store going away between the dedupe claim and the cap reservation."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def reserve(self, counters: Any, now_ms: int) -> int:
        if self.fail:
            self.fail = False
            raise ConnectionError("connection reset")
        return await super().reserve(counters, now_ms)


async def test_a_failure_after_the_claim_releases_it_so_the_retry_is_sent() -> None:
    policy = DeliveryPolicy(week_model(), ReserveFailsOnce())
    noon = MONDAY + 12 * HOUR
    with pytest.raises(ConnectionError):
        await policy.decide(request("t1", noon), noon)
    retried = await policy.decide(request("t1", noon), noon)
    assert (retried.action, retried.channel) == ("send", "inbox")
    again = await policy.decide(request("t1", noon), noon)
    assert (again.action, again.reason) == ("suppress", "duplicate")


@pytest.mark.integration
async def test_unclaim_in_redis_frees_the_trigger_id(redis_client: Redis) -> None:
    store = RedisPolicyStore(redis_client)
    key = f"t-{uuid.uuid4().hex}"
    assert await store.claim(key, 60_000, 0)
    assert not await store.claim(key, 60_000, 0)
    await store.unclaim(key)
    assert await store.claim(key, 60_000, 0)
