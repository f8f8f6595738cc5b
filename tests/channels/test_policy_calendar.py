"""The policy's calendar (channels.policy.decide.Calendar): real time by default; the
demo's accelerated one makes a cap's day, a night of quiet hours and the
back-off pause as many times shorter as its journey waits."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from channels.policy.decide import Calendar, DeliveryPolicy, DeliveryRequest
from channels.policy.store import MemoryPolicyStore
from config.delivery_models import BackoffModel, CapModel, DeliveryModel, QuietHoursModel

UTC = ZoneInfo("UTC")
START = int(datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp() * 1000)  # a Monday, 09:00
MINUTE = 60_000
SCALE = 96.0  # the demo's journey scale: a day is 15 minutes


def policy(quiet: bool = False, ignored: int = 1000) -> DeliveryPolicy:
    model = DeliveryModel(caps=CapModel(per_day=2, per_week=None),
                          quiet_hours=QuietHoursModel(enabled=quiet),
                          backoff=BackoffModel(ignored=ignored, pause=7 * 86_400_000))
    return DeliveryPolicy(model, MemoryPolicyStore())


def request(n: int, ts: int) -> DeliveryRequest:
    return DeliveryRequest(f"t{n}", "u1", "s", None, ts, ("inbox",), None)


def test_the_calendar_maps_both_ways() -> None:
    real = Calendar()
    assert real.to_calendar(START + 5) == START + 5 and real.span(7) == 7
    fast = Calendar(START, SCALE)
    assert fast.to_calendar(START + 15 * MINUTE) == START + 86_400_000
    assert fast.from_calendar(START + 86_400_000) == START + 15 * MINUTE
    assert fast.span(15 * MINUTE) == 86_400_000


async def sends(p: DeliveryPolicy, times: list[int], first: int = 0) -> list[str]:
    out = []
    for n, ts in enumerate(times, first):
        decision = await p.decide(request(n, ts), ts)
        out.append(decision.action if decision.reason is None else decision.reason)
        if decision.leased:
            await p.done(f"t{n}", "u1")
    return out


async def test_a_caps_day_is_a_day_of_the_calendar() -> None:
    times = [START + m * MINUTE for m in (0, 1, 2, 16, 17)]
    assert await sends(policy(), times) == ["send", "send", "cap_day", "cap_day", "cap_day"]
    fast = policy()
    fast.calendar = Calendar(START, SCALE)  # 16 minutes later is the next day
    assert await sends(fast, times) == ["send", "send", "cap_day", "send", "send"]


async def test_quiet_hours_end_on_the_calendar_and_are_due_in_real_time() -> None:
    fast = policy(quiet=True)
    fast.calendar = Calendar(START, SCALE)
    # 22:30 on the calendar: 13.5 hours after 09:00, 8.4375 real minutes
    at = START + int(13.5 * 3_600_000 / SCALE)
    decision = await fast.decide(request(0, at), at)
    assert (decision.action, decision.reason) == ("defer", "quiet_hours")
    # until 08:00 the next calendar day: 23 hours after 09:00
    assert decision.due_ms == START + int(23 * 3_600_000 / SCALE)


async def test_the_backoff_pause_is_counted_on_the_calendar() -> None:
    real, fast = policy(ignored=1), policy(ignored=1)
    fast.calendar = Calendar(START, SCALE)
    for p in (real, fast):
        await p.record_sent("u1", START)  # one message, never opened
    # 7 calendar days = 105 real minutes at the demo's scale
    later = START + 106 * MINUTE
    assert await sends(fast, [START + 104 * MINUTE]) == ["backoff"]
    assert await sends(real, [later], first=1) == ["backoff"]
    assert await sends(fast, [later], first=1) == ["send"]
