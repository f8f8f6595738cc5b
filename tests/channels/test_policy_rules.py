"""The delivery policy's rules at their edges (channels.policy.decide): each
decision's figures as the decision log shows them, the counters and claims
it asks the store for (key names from docs/deploy.md's formula, computed in
tests/redis_keys.py), the bounds of quiet hours, age, back-off and lease
attempts, and the metrics. Expected values are written out here."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from channels.audience.recipient import Reach, open_recipient
from channels.policy.decide import (
    SUPPRESS_REASONS,
    Calendar,
    Decision,
    DeliveryPolicy,
    DeliveryRequest,
    PolicyMetrics,
    Released,
    caps_key,
    claim_key,
    deferred_key,
    engagement_key,
)
from channels.policy.store import MemoryPolicyStore
from config.delivery_models import BackoffModel, CapModel, DeliveryModel, QuietHoursModel
from tests.redis_keys import bucket_tag, pending_key

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR = 3_600_000
DAY = 24 * HOUR


def at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> int:
    return int(datetime(y, m, d, hh, mm, tzinfo=SHANGHAI).timestamp() * 1000)


MONDAY_10 = at(2019, 9, 30)  # ISO week 40


def model(**update: Any) -> DeliveryModel:
    base = DeliveryModel(default_timezone="Asia/Shanghai",
                         caps=CapModel(per_day=3, per_week=10),
                         backoff=BackoffModel(ignored=1000), redis_prefix="p:")
    return base.model_copy(update=update)


def req(tid: str, ts: int, user: str = "ann", channels: tuple[str, ...] = ("inbox",),
        tz: str | None = None) -> DeliveryRequest:
    return DeliveryRequest(tid, user, "s", None, ts, channels, tz)


class Recording(MemoryPolicyStore):
    def __init__(self) -> None:
        super().__init__()
        self.reserves: list[tuple[list[tuple[str, int, int]], int]] = []
        self.claims: list[tuple[Any, ...]] = []

    async def reserve(self, counters: Sequence[tuple[str, int, int]], now_ms: int) -> int:
        self.reserves.append((list(counters), now_ms))
        return await super().reserve(counters, now_ms)

    async def claim_leased(self, *args: Any) -> bool:
        self.claims.append(args)
        return await super().claim_leased(*args)


def test_the_key_names() -> None:
    assert deferred_key("p:", 3) == "p:deferred:{d03}"
    assert deferred_key("p:", 12) == "p:deferred:{d12}"
    assert claim_key("p:", "m1", "ann") == f"p:dd:{bucket_tag('ann')}:m1"
    assert engagement_key("p:", "ann") == "p:eng:{ann}"
    assert caps_key("p:", "ann", "all") == "p:cap:{ann}:all"


async def test_the_claim_its_lease_and_the_counters_asked_for() -> None:
    store = Recording()
    policy = DeliveryPolicy(model(channel_caps={"email": CapModel(per_day=1, per_week=2)}),
                            store)
    decision = await policy.decide(req("t1", MONDAY_10, channels=("email",)), MONDAY_10 + 5)
    assert decision == Decision("send", channel="email", leased=True,
                                figures="local 10:00 Asia/Shanghai, under cap_day 3 and "
                                        "cap_week 10")
    assert store.claims == [(f"p:dd:{bucket_tag('ann')}:t1", 7 * DAY, MONDAY_10 + 5,
                             pending_key("p:", "ann"), "t1",
                             f'["t1","ann","s",null,{MONDAY_10},["email"],null]',
                             MONDAY_10 + 5 + 120_000)]
    assert store.reserves == [([("p:cap:{ann}:all:d:20190930", 3, 2 * DAY),
                                ("p:cap:{ann}:all:w:2019W40", 10, 8 * DAY),
                                ("p:cap:{ann}:ch:email:d:20190930", 1, 2 * DAY),
                                ("p:cap:{ann}:ch:email:w:2019W40", 2, 8 * DAY)],
                               MONDAY_10 + 5)]
    assert await policy.deferred_count() == 1  # leased until done
    await policy.done("t1", "ann")
    assert await policy.deferred_count() == 0


async def test_the_day_and_iso_week_of_the_users_zone() -> None:
    store = Recording()
    policy = DeliveryPolicy(model(caps=CapModel(per_day=None, per_week=4)), store)
    # Mon 31 Dec 2018 is in ISO week 1 of 2019; 7 Jan 2019 in week 2.
    for n, now in enumerate((at(2018, 12, 31), at(2019, 1, 7))):
        await policy.decide(req(f"t{n}", now), now)
    assert [c for counters, _ in store.reserves for c in counters] == [
        ("p:cap:{ann}:all:w:2019W01", 4, 8 * DAY), ("p:cap:{ann}:all:w:2019W02", 4, 8 * DAY)]
    day_only = Recording()
    await DeliveryPolicy(model(caps=CapModel(per_day=2, per_week=None)), day_only).decide(
        req("t", at(2018, 12, 31)), at(2018, 12, 31))
    assert day_only.reserves[0][0] == [("p:cap:{ann}:all:d:20181231", 2, 2 * DAY)]


@pytest.mark.parametrize(("caps", "text"), [
    (CapModel(per_day=3, per_week=None), "under cap_day 3"),
    (CapModel(per_day=None, per_week=9), "under cap_week 9"),
    (CapModel(per_day=None, per_week=None), "under no caps"),
])
async def test_the_send_figures_name_the_caps(caps: CapModel, text: str) -> None:
    policy = DeliveryPolicy(model(caps=caps), MemoryPolicyStore())
    decision = await policy.decide(req("t1", MONDAY_10), MONDAY_10 + 61_000)
    assert decision.figures == f"local 10:01 Asia/Shanghai, {text}"


async def test_cap_figures_today_and_this_week() -> None:
    policy = DeliveryPolicy(model(caps=CapModel(per_day=2, per_week=3)), MemoryPolicyStore())
    out = []
    for n, now in enumerate((MONDAY_10, MONDAY_10 + 1, MONDAY_10 + 2, MONDAY_10 + DAY,
                             MONDAY_10 + DAY + 1)):
        d = await policy.decide(req(f"t{n}", now), now)
        out.append((d.action, d.reason, d.figures if d.reason else ""))
    assert out == [("send", None, ""), ("send", None, ""),
                   ("suppress", "cap_day", "2 of 2 sent today (Asia/Shanghai)"),
                   ("send", None, ""),
                   ("suppress", "cap_week", "3 of 3 sent this week (Asia/Shanghai)")]
    assert policy.suppressed == {"cap_day": 1, "cap_week": 1}


async def test_channel_caps_pass_on_and_say_which_was_full() -> None:
    policy = DeliveryPolicy(model(caps=CapModel(per_day=4, per_week=10),
                                  channel_caps={"email": CapModel(per_day=1),
                                                "sms": CapModel(per_day=None, per_week=1)}),
                            MemoryPolicyStore())
    pref = ("email", "sms", "inbox")
    got = []
    for n in range(3):
        d = await policy.decide(req(f"t{n}", MONDAY_10 + n, channels=pref), MONDAY_10 + n)
        got.append((d.channel, d.figures))
    assert got == [
        ("email", "local 10:00 Asia/Shanghai, under cap_day 4 and cap_week 10"),
        ("sms", "email 1 of 1 sent today (Asia/Shanghai); sent by sms"),
        ("inbox", "email 1 of 1 sent today (Asia/Shanghai), "
                  "sms 1 of 1 sent this week (Asia/Shanghai); sent by inbox")]
    full = await policy.decide(req("t9", MONDAY_10 + 9, channels=("email", "sms")),
                               MONDAY_10 + 9)
    assert (full.action, full.reason, full.figures) == (
        "suppress", "channel_cap",
        "email 1 of 1 sent today (Asia/Shanghai); sms 1 of 1 sent this week (Asia/Shanghai)")
    # A full overall cap wins over the channel's: cap_day, not channel_cap.
    await policy.decide(req("t3", MONDAY_10 + 3, channels=("inbox",)), MONDAY_10 + 3)
    over = await policy.decide(req("t8", MONDAY_10 + 8, channels=("email", "inbox")),
                               MONDAY_10 + 8)
    assert (over.reason, over.figures) == ("cap_day", "4 of 4 sent today (Asia/Shanghai)")


async def test_age_is_stale_only_past_max_age_with_its_figures() -> None:
    policy = DeliveryPolicy(model(), MemoryPolicyStore())
    now = MONDAY_10
    edge = await policy.decide(req("edge", now - 12 * HOUR), now)
    assert edge.action == "send"  # exactly max_age: still fresh
    stale = await policy.decide(req("old", now - 13 * HOUR - 999), now)
    assert (stale.reason, stale.figures) == ("stale", "13h old, max_age 12h")
    assert stale.leased is False
    # No claim was taken: the same id, fresh, goes out.
    assert (await policy.decide(req("old", now), now)).action == "send"


async def test_a_deferral_past_max_age_is_stale_and_one_to_it_is_not() -> None:
    policy = DeliveryPolicy(model(), MemoryPolicyStore())
    late = at(2019, 9, 30, 23, 30)
    wake = at(2019, 10, 1, 8, 0)
    over = await policy.decide(req("over", wake - 12 * HOUR - 1000), late)
    assert (over.reason, over.figures) == (
        "stale", "until 08:00 Asia/Shanghai would make it 43201s old, max_age 12h")
    assert await policy.deferred_count() == 0  # suppressed: not pending
    edge = await policy.decide(req("edge", wake - 12 * HOUR), late)
    assert edge == Decision("defer", reason="quiet_hours", due_ms=wake,
                            figures="until 08:00 Asia/Shanghai")
    assert await policy.deferred_count() == 1


@pytest.mark.parametrize(("start", "end", "hh", "mm", "wake"), [
    ("22:00", "08:00", 21, 59, None),
    ("22:00", "08:00", 22, 0, (2019, 10, 1, 8, 0)),
    ("22:00", "08:00", 7, 59, (2019, 9, 30, 8, 0)),
    ("22:00", "08:00", 8, 0, None),
    ("22:00", "07:30", 7, 29, (2019, 9, 30, 7, 30)),
    ("12:00", "14:15", 11, 59, None),
    ("12:00", "14:15", 12, 0, (2019, 9, 30, 14, 15)),
    ("12:00", "14:15", 14, 14, (2019, 9, 30, 14, 15)),
    ("12:00", "14:15", 14, 15, None),
    ("12:00", "14:15", 23, 0, None),
    ("12:00", "12:00", 12, 0, None),  # start == end: no quiet hours
])
def test_quiet_until_at_the_edges(start: str, end: str, hh: int, mm: int,
                                  wake: tuple[int, int, int, int, int] | None) -> None:
    policy = DeliveryPolicy(model(quiet_hours=QuietHoursModel(start=start, end=end)),
                            MemoryPolicyStore())
    local = datetime(2019, 9, 30, hh, mm, 30, tzinfo=SHANGHAI)
    assert policy.quiet_until(local) == (None if wake is None else at(*wake))


def test_switched_off_quiet_hours_never_defer() -> None:
    policy = DeliveryPolicy(model(quiet_hours=QuietHoursModel(enabled=False)),
                            MemoryPolicyStore())
    assert policy.quiet_until(datetime(2019, 9, 30, 23, 0, tzinfo=SHANGHAI)) is None


async def test_backoff_at_its_bounds_and_its_figures() -> None:
    policy = DeliveryPolicy(model(backoff=BackoffModel(ignored=2, pause=DAY),
                                  caps=CapModel(per_day=None, per_week=None)),
                            MemoryPolicyStore())
    now = MONDAY_10
    await policy.record_sent("ann", now)
    one = await policy.decide(req("a", now + 10), now + 10)
    assert one.action == "send"  # 1 ignored of 2
    await policy.record_sent("ann", now + 10)
    two = await policy.decide(req("b", now + 20), now + 20)
    assert (two.reason, two.figures) == (
        "backoff", "2 sent without an open or click, the last 10ms ago (pause 1d)")
    assert (await policy.decide(req("c", now + 10 + DAY - 1), now + 10 + DAY - 1)).reason \
        == "backoff"
    assert (await policy.decide(req("d", now + 10 + DAY), now + 10 + DAY)).action == "send"
    await policy.record_engaged("ann")
    assert (await policy.decide(req("e", now + 30), now + 30)).action == "send"


async def test_a_request_with_no_channel_and_its_figures() -> None:
    policy = DeliveryPolicy(model(), MemoryPolicyStore())
    d = await policy.decide(req("t", MONDAY_10, channels=()), MONDAY_10)
    assert (d.reason, d.figures) == ("no_channel", "none of the content's channels is configured")
    assert await policy.deferred_count() == 0


class Refusing:
    """A recipient whose channels are all refused (the reach is the audience's)."""

    zone = "Europe/Berlin"

    def reach(self, channels: Sequence[str]) -> Reach:
        return Reach((), "unsubscribed", tuple((c, "unsubscribed") for c in channels))


async def test_the_audience_reason_suppresses_and_ends_the_lease() -> None:
    policy = DeliveryPolicy(model(), MemoryPolicyStore())
    refusing: Any = Refusing()
    blocked = await policy.decide(req("t", MONDAY_10, channels=("email", "sms")), MONDAY_10,
                                  recipient=refusing)
    assert (blocked.action, blocked.reason, blocked.figures) == (
        "suppress", "unsubscribed", "email: unsubscribed; sms: unsubscribed")
    assert await policy.deferred_count() == 0 and policy.suppressed == {"unsubscribed": 1}
    # The recipient's zone, not the request's, sets quiet hours: 10:00 in
    # Shanghai is 04:00 in Berlin.
    quiet = await policy.decide(req("q", MONDAY_10, tz="Asia/Shanghai"), MONDAY_10,
                                recipient=replace(open_recipient("ann"), zone="Europe/Berlin"))
    assert (quiet.action, quiet.figures) == ("defer", "until 08:00 Europe/Berlin")


async def test_a_duplicate_says_its_id_and_window() -> None:
    policy = DeliveryPolicy(model(dedupe_ttl=3 * HOUR), MemoryPolicyStore())
    await policy.decide(req("t1", MONDAY_10), MONDAY_10)
    again = await policy.decide(req("t1", MONDAY_10), MONDAY_10 + 1)
    assert (again.reason, again.figures) == ("duplicate", "id t1 already decided within 3h")
    assert again.leased is False
    later = await policy.decide(req("t1", MONDAY_10), MONDAY_10 + 3 * HOUR)
    assert later.action == "send"  # the claim expired with dedupe_ttl
    assert await policy.claim("m1", "ann", MONDAY_10) is True
    assert await policy.claim("m1", "ann", MONDAY_10 + 3 * HOUR - 1) is False


async def test_a_released_request_is_decided_without_a_new_claim() -> None:
    store = Recording()
    policy = DeliveryPolicy(model(), store)
    await policy.decide(req("t1", MONDAY_10), MONDAY_10)
    again = await policy.decide(req("t1", MONDAY_10), MONDAY_10 + 1, released=True)
    assert again.action == "send" and len(store.claims) == 1
    old = await policy.decide(req("t1", MONDAY_10 - 13 * HOUR), MONDAY_10, released=True)
    assert old.reason == "stale" and await policy.deferred_count() == 0


async def test_lease_hand_outs_up_to_the_attempts_then_exhausted() -> None:
    policy = DeliveryPolicy(model(lease=10_000, lease_attempts=2), MemoryPolicyStore())
    await policy.decide(req("t1", MONDAY_10), MONDAY_10)
    await policy.decide(req("t2", MONDAY_10, user="bob"), MONDAY_10)
    assert await policy.release_due(MONDAY_10 + 9_999) == []
    first = await policy.release_due(MONDAY_10 + 10_000, limit=1)
    assert [(r.request.trigger_id, r.attempts, r.exhausted) for r in first] == [
        ("t1", 1, False)]
    rest = await policy.release_due(MONDAY_10 + 10_000)
    assert [(r.request.trigger_id, r.attempts) for r in rest] == [("t2", 1)]
    second = await policy.release_due(MONDAY_10 + 20_000)
    assert [(r.attempts, r.exhausted) for r in second] == [(2, False), (2, False)]
    third = await policy.release_due(MONDAY_10 + 30_000)
    assert [(r.attempts, r.exhausted) for r in third] == [(3, True), (3, True)]
    assert third[0].request == req("t1", MONDAY_10)


async def test_record_sent_ends_the_lease_it_names() -> None:
    policy = DeliveryPolicy(model(), MemoryPolicyStore())
    await policy.decide(req("t1", MONDAY_10), MONDAY_10)
    await policy.record_sent("ann", MONDAY_10)
    assert await policy.deferred_count() == 1
    await policy.record_sent("ann", MONDAY_10, lease="t1")
    assert await policy.deferred_count() == 0


class FailingReserve(MemoryPolicyStore):
    async def reserve(self, counters: Sequence[tuple[str, int, int]], now_ms: int) -> int:
        raise ConnectionError("gone")


async def test_a_failure_after_the_claim_leaves_nothing_pending() -> None:
    policy = DeliveryPolicy(model(), FailingReserve())
    with pytest.raises(ConnectionError):
        await policy.decide(req("t1", MONDAY_10), MONDAY_10)
    assert await policy.deferred_count() == 0
    # A released request keeps its pending entry (and takes no claim).
    store = FailingReserve()
    released = DeliveryPolicy(model(), store)
    await store.defer(pending_key("p:", "ann"), "t2", req("t2", MONDAY_10).encode(), MONDAY_10)
    with pytest.raises(ConnectionError):
        await released.decide(req("t2", MONDAY_10), MONDAY_10, released=True)
    assert await released.deferred_count() == 1


async def test_the_zone_falls_back_to_the_default() -> None:
    policy = DeliveryPolicy(model(), MemoryPolicyStore())
    assert policy.zone(None).key == "Asia/Shanghai"
    assert policy.zone("Mars/Base").key == "Asia/Shanghai"
    assert policy.zone("Europe/Berlin").key == "Europe/Berlin"


async def test_the_metrics_count_deferrals_and_suppressions() -> None:
    registry = CollectorRegistry()
    metrics = PolicyMetrics.on(registry)
    assert PolicyMetrics.on(registry) is metrics
    for reason in SUPPRESS_REASONS:  # every series from the start
        assert registry.get_sample_value("scenetrigger_suppressed_total",
                                         {"reason": reason}) == 0
    policy = DeliveryPolicy(model(), MemoryPolicyStore(), metrics)
    night = at(2019, 9, 30, 23, 0)
    await policy.decide(req("n", night), night)
    await policy.decide(req("n", night), night)
    assert registry.get_sample_value("scenetrigger_deferred_total") == 1
    assert policy.deferred == 1
    await policy.decide(req("m", night, user="bob"), night)  # counted on, not set to 1
    assert registry.get_sample_value("scenetrigger_deferred_total") == 2
    assert policy.deferred == 2
    assert registry.get_sample_value("scenetrigger_suppressed_total",
                                     {"reason": "duplicate"}) == 1
    assert SUPPRESS_REASONS == ("stale", "bad_time", "duplicate", "no_address",
                                "do_not_contact", "unsubscribed", "no_consent", "backoff",
                                "cap_day", "cap_week", "channel_cap", "no_channel")


def test_the_policy_values_are_frozen_and_requests_default_to_none() -> None:
    plain = DeliveryRequest("t", "u", "s", None, 1, ("inbox",))
    assert (plain.tz, plain.order) == (None, None)
    assert plain.encode() == '["t","u","s",null,1,["inbox"],null]'
    decision = Decision("send")
    assert (decision.channel, decision.reason, decision.due_ms, decision.figures,
            decision.leased) == (None, None, None, "", False)
    # A policy's calendar is replaced whole (the demo's), never changed in place;
    # the metrics are one set per registry, shared by every policy on it.
    for value, name in ((plain, "tz"), (decision, "channel"),
                        (Released(plain, 1, False), "attempts"), (Calendar(), "scale"),
                        (PolicyMetrics.on(CollectorRegistry()), "deferred")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)


async def test_a_time_without_a_date_says_so() -> None:
    policy = DeliveryPolicy(model(default_timezone="UTC"), MemoryPolicyStore())
    far = 1 << 62
    decision = await policy.decide(req("t", far), far)
    assert (decision.reason, decision.figures) == ("bad_time", f"{far} has no date in UTC")


async def test_release_hands_out_at_most_a_thousand_by_default() -> None:
    store = MemoryPolicyStore()
    policy = DeliveryPolicy(model(), store)
    for n in range(1_001):
        await store.defer(pending_key("p:", "ann"), f"t{n}", req(f"t{n}", MONDAY_10).encode(),
                          MONDAY_10)
    assert len(await policy.release_due(MONDAY_10)) == 1_000
    assert len(await policy.release_due(MONDAY_10)) == 1  # the one left (the others are leased)


def test_an_accelerated_calendar_runs_from_zero_by_default() -> None:
    fast = Calendar(scale=2.0)
    assert (fast.to_calendar(1_000), fast.from_calendar(2_000), fast.span(5)) == (2_000, 1_000, 10)


def test_the_metrics_help_texts() -> None:
    registry = CollectorRegistry()
    PolicyMetrics.on(registry)
    docs = {m.name: m.documentation for m in registry.collect()}
    assert docs == {"scenetrigger_suppressed": "Deliveries suppressed by the policy",
                    "scenetrigger_deferred": "Deliveries deferred by quiet hours"}
