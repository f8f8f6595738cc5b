"""The engagement curve (triggers.sendtime): updated online in the profile,
decayed, kept in the state encoding, merged, and planned on."""

from __future__ import annotations

import random

from triggers.events import Event
from triggers.merge import merge_profiles
from triggers.profile import Profile
from triggers.sendtime import (
    HALF_LIFE_MS,
    HOUR_MS,
    VISIT_GAP_MS,
    WEEK_HOURS,
    WEIGHTS,
    Rules,
    engagement_kind,
    hour_of_week,
    plan,
    valid_curve,
    weights_at,
)
from triggers.state import UserState
from triggers.wire import profile_from_wire

WEEK = WEEK_HOURS * HOUR_MS


def never_quiet(_ms: int) -> bool:
    return False


def profile_after(*events: Event) -> Profile:
    profile = Profile()
    for event in events:
        profile.update(event)
    return profile


def test_opens_clicks_purchases_and_visits_count_by_utc_hour_of_week() -> None:
    t = 10 * WEEK + 20 * HOUR_MS  # a Thursday 20:00 UTC
    profile = profile_after(
        Event("u", t, "view", {}),  # first event: a visit
        Event("u", t + 60_000, "view", {}),  # same visit
        Event("u", t + 120_000, "opened", {}),
        Event("u", t + 180_000, "clicked", {}),
        Event("u", t + 240_000, "delivered", {}),  # the system's own: nothing
        Event("u", t + 300_000, "purchase", {"price": 3}),
        Event("u", t + 300_000 + VISIT_GAP_MS, "view", {}),  # a new visit, still 20:xx
    )
    slot = hour_of_week(t)
    assert slot == 20
    weight, events, _ts = profile.engagement[slot]
    assert events == 5
    expected = 2 * WEIGHTS["visit"] + WEIGHTS["opened"] + WEIGHTS["clicked"] + WEIGHTS["purchase"]
    assert abs(weight - expected) <= 5  # each step decays by a few minutes' worth
    assert list(profile.engagement) == [slot]


def test_a_visit_needs_half_an_hour_of_silence() -> None:
    assert engagement_kind("view", 1_000, None) == "visit"
    assert engagement_kind("view", VISIT_GAP_MS - 1, 0) is None
    assert engagement_kind("page", VISIT_GAP_MS, 0) == "visit"
    assert engagement_kind("failed", 10**9, 0) is None


def test_weight_halves_after_the_half_life() -> None:
    profile = profile_after(Event("u", 0, "opened", {}))
    [now] = weights_at(profile.engagement, HALF_LIFE_MS)[:1]
    assert abs(now - 0.5) < 1e-9
    # An event a half-life later in the same hour of week: old weight halved, then added.
    later = HALF_LIFE_MS - HALF_LIFE_MS % WEEK  # the same hour of the week
    profile.update(Event("u", later, "opened", {}))
    weight, events, ts = profile.engagement[0]
    assert events == 2 and ts == later
    assert weight == round(1000 * 2 ** (-later / HALF_LIFE_MS)) + 1000


def test_the_curve_survives_the_state_encoding_and_the_trigger_record() -> None:
    rng = random.Random(7)
    state = UserState()
    for _ in range(40):
        state.profile.update(Event("u", rng.randrange(0, 8 * WEEK), rng.choice(
            ["opened", "clicked", "view", "purchase"]), {}))
    decoded = UserState.decode(state.encode())
    assert decoded.profile.engagement == state.profile.engagement
    assert profile_from_wire(state.profile.to_wire()).engagement == state.profile.engagement


def test_older_and_damaged_curves_read_as_empty() -> None:
    wire = Profile().to_wire()
    assert Profile.from_wire(wire[:-1]).engagement == {}
    assert valid_curve([[200, 1, 1, 0]]) == {}  # no such hour of the week
    assert valid_curve([[3, -1, 1, 0]]) == {}
    assert valid_curve({"3": [1, 1, 0]}) == {}
    assert valid_curve([[3, 5, 1, 9]]) == {3: [5, 1, 9]}


def test_an_identity_merge_adds_the_curves() -> None:
    a = profile_after(Event("a", 5 * HOUR_MS, "opened", {}))
    b = profile_after(Event("b", 5 * HOUR_MS, "clicked", {}), Event("b", 9 * HOUR_MS, "opened", {}))
    merged = merge_profiles(a, b)
    assert merged.engagement[5] == [3000, 2, 5 * HOUR_MS]
    assert merged.engagement[9] == [1000, 1, 9 * HOUR_MS]


def _curve_with_peak(hour: int, n: int, noise: int, rng: random.Random) -> Profile:
    profile = Profile()
    for _ in range(n):
        day = rng.randrange(28)
        profile.update(Event("u", day * 86_400_000 + hour * HOUR_MS + rng.randrange(HOUR_MS),
                             "opened", {}))
    for _ in range(noise):
        profile.update(Event("u", rng.randrange(28 * 86_400_000), "opened", {}))
    return profile


def test_plan_holds_to_the_peak_hour_within_the_window() -> None:
    rng = random.Random(3)
    profile = _curve_with_peak(20, 20, 5, rng)
    now = 29 * 86_400_000 + 9 * HOUR_MS + 600_000  # 09:10 UTC
    weights = weights_at(profile.engagement, now)
    events = sum(c[1] for c in profile.engagement.values())
    choice = plan(weights, events, [0] * 24, now, now + 24 * HOUR_MS, never_quiet, Rules())
    assert choice.reason == "best"
    assert choice.due_ms == 29 * 86_400_000 + 20 * HOUR_MS
    # The window ends before 20:00: the best hour inside it, or at once.
    short = plan(weights, events, [0] * 24, now, now + 3 * HOUR_MS, never_quiet, Rules())
    assert short.due_ms is None or short.due_ms <= now + 3 * HOUR_MS
    # 20:00 is quiet: never chosen.
    quiet = plan(weights, events, [0] * 24, now, now + 24 * HOUR_MS,
                 lambda ms: (ms // HOUR_MS) % 24 == 20, Rules())
    assert quiet.due_ms is None or (quiet.due_ms // HOUR_MS) % 24 != 20


def test_a_flat_curve_or_too_few_events_send_at_once() -> None:
    flat = [1.0] * WEEK_HOURS
    now = 5 * HOUR_MS + 7
    assert plan(flat, 500, [0] * 24, now, now + 24 * HOUR_MS, never_quiet, Rules()).due_ms is None
    peaked = [0.0] * WEEK_HOURS
    peaked[20] = 10.0
    few = plan(peaked, 4, [0] * 24, now, now + 24 * HOUR_MS, never_quiet, Rules(min_events=5))
    assert (few.due_ms, few.reason) == (None, "no_data")
    enough = plan(peaked, 5, [0] * 24, now, now + 24 * HOUR_MS, never_quiet, Rules(min_events=5))
    assert enough.due_ms == 20 * HOUR_MS
