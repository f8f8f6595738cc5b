"""`replenishment`: the purchase cycle the profile estimates, and the timer
that fires when the next purchase is overdue by the margin."""

from __future__ import annotations

import math

import pytest

from tests.triggers.helpers import engine, ev, feed, pending, run
from triggers.cycle import (
    MAX_CATEGORIES,
    MAX_INTERVALS,
    OCCASION_GAP_MS,
    add_interval,
    as_cycle,
)
from triggers.engine import Engine
from triggers.profile import Profile
from triggers.state import UserState

DAY = 86_400_000
REFILL = {"kind": "replenishment", "margin": "2d"}


def buys(user: str, *days: float, **fields: object) -> list[dict[str, object]]:
    return [ev(user, round(d * DAY), "purchase", **fields) for d in days]


def test_intervals_give_mean_and_population_sd_of_the_newest_kept() -> None:
    stats = None
    for interval in (10, 14, 12):
        stats = add_interval(stats, interval)
    cycle = as_cycle(stats)
    assert cycle is not None and cycle.intervals == 3
    assert cycle.mean_ms == 12
    assert cycle.sd_ms == pytest.approx(math.sqrt(((10 - 12) ** 2 + 2**2 + 0) / 3))
    assert cycle.spread_at_most(cycle.sd_ms / 12 + 1e-9)
    assert not cycle.spread_at_most(cycle.sd_ms / 12 - 1e-9)
    for interval in range(100, 100 + MAX_INTERVALS):
        stats = add_interval(stats, interval)
    cycle = as_cycle(stats)
    assert cycle is not None and cycle.intervals == 3 + MAX_INTERVALS
    assert cycle.recent == tuple(range(100, 100 + MAX_INTERVALS))


def test_spread_boundary_is_exact() -> None:
    cycle = as_cycle([2, [1, 3]])  # mean 2, sd 1: spread exactly 0.5
    assert cycle is not None and cycle.spread_at_most(0.5) and not cycle.spread_at_most(0.4999)


def test_purchases_of_one_occasion_make_no_interval_and_late_ones_none() -> None:
    p = Profile()
    from triggers.events import event_from_mapping
    for raw in [ev("u", 0, "purchase"), ev("u", OCCASION_GAP_MS, "purchase"),
                ev("u", 10 * DAY, "purchase"), ev("u", 5 * DAY, "purchase")]:
        p.update(event_from_mapping(raw))
    cycle = as_cycle(p.cycle)
    assert cycle is not None and cycle.intervals == 1
    assert cycle.mean_ms == 10 * DAY - OCCASION_GAP_MS


def test_per_category_statistics_are_capped_least_recent_first() -> None:
    from triggers.events import event_from_mapping
    p = Profile()
    for i in range(MAX_CATEGORIES + 2):
        p.update(event_from_mapping(ev("u", i * DAY, "purchase", category=f"c{i}")))
    assert len(p.cats) == MAX_CATEGORIES
    assert "c0" not in p.cats and "c1" not in p.cats and f"c{MAX_CATEGORIES + 1}" in p.cats


def test_cycle_survives_the_state_encoding_and_older_states_decode() -> None:
    eng = engine({"refill": REFILL})
    feed(eng, buys("u", 0, 10, 21, category="coffee"))
    state = eng.store.get("u")
    assert state is not None
    again = UserState.decode(state.encode())
    assert again.profile.cycle == state.profile.cycle and again.profile.cats == state.profile.cats
    old = Profile.from_wire(state.profile.to_wire()[:17])  # written before the cycle fields
    assert old.cycle is None and old.cats == {}


def test_fires_margin_after_the_expected_next_purchase() -> None:
    eng = engine({"refill": REFILL})
    feed(eng, buys("u", 0, 10, 20))
    due = 30 * DAY + 2 * DAY
    assert pending(eng) == [("refill", "u", due)]
    assert feed(eng, [ev("x", due)]) == [[]]  # at the deadline: not yet
    assert feed(eng, [ev("x", due + 1)]) == [[("refill", "u", None, due)]]
    assert pending(eng) == []


def test_a_purchase_at_the_deadline_re_arms_one_after_it_is_too_late() -> None:
    due = 32 * DAY
    on_time = run({"refill": REFILL}, [*buys("u", 0, 10, 20), ev("u", due, "purchase")])
    assert on_time == []
    late = run({"refill": REFILL}, [*buys("u", 0, 10, 20), ev("u", due + 1, "purchase")])
    assert late == [("refill", "u", None, due)]


def test_not_armed_before_min_intervals_nor_when_too_irregular() -> None:
    eng = engine({"refill": REFILL})
    feed(eng, buys("u", 0, 10))  # one interval, two needed
    assert pending(eng) == []
    eng = engine({"refill": {**REFILL, "max_spread": 0.5}})
    feed(eng, buys("u", 0, 1, 30))  # intervals 1 and 29 days: spread 0.93
    assert pending(eng) == []
    feed(eng, buys("u", 31))  # a 4th purchase adds an interval; still irregular
    assert pending(eng) == []


def test_category_scene_reads_that_category_only() -> None:
    eng = engine({"refill": {**REFILL, "category": "coffee"}})
    feed(eng, buys("u", 0, 7, 14, category="coffee") + buys("u", 15, 16, 17, category="tea"))
    assert pending(eng) == [("refill", "u", 14 * DAY + 7 * DAY + 2 * DAY)]


def test_same_occasion_purchase_moves_the_deadline_a_late_one_does_not() -> None:
    eng = engine({"refill": REFILL})
    feed(eng, buys("u", 0, 10, 20))
    seq = eng.arm_count
    feed(eng, [ev("u", 5 * DAY, "purchase")])  # late: nothing changes, not re-armed
    assert eng.arm_count == seq and pending(eng) == [("refill", "u", 32 * DAY)]


def test_needs_the_profile() -> None:
    from config.loader import validate_config
    scenes = validate_config({"scenes": {"refill": REFILL}}).scene_list()
    with pytest.raises(ValueError, match="reads the profile"):
        Engine(scenes, track_profile=False)


def test_rebuild_timers_after_a_restart_fires_the_same() -> None:
    eng = engine({"refill": REFILL})
    feed(eng, buys("u", 0, 10, 20))
    fresh = engine({"refill": REFILL})
    for user, state in eng.store.items():
        fresh.store.put(user, UserState.decode(state.encode()))
    assert fresh.rebuild_timers() == 1
    assert feed(fresh, [ev("x", 40 * DAY)]) == [[("refill", "u", None, 32 * DAY)]]


def test_a_scene_filter_on_a_cycle_tag_reads_the_cycle() -> None:
    weekly = {"kind": "arrival", "when": {"type": "view"},
              "user": {"tags": {"all": ["cycle:weekly"]}}}
    fired = run({"w": weekly}, buys("u", 0, 7, 14) + buys("v", 0, 30, 60)
                + [ev("u", 15 * DAY), ev("v", 61 * DAY)])
    assert fired == [("w", "u", None, 15 * DAY)]


def test_malformed_stored_cycle_reads_as_none() -> None:
    wire = Profile().to_wire()
    wire[17], wire[18], wire[19] = [1, ["x"]], {"c": [1, 2], "d": [7, 1, ["x"]]}, "soon"
    p = Profile.from_wire(wire)
    # an unreadable entry goes; one with unreadable statistics keeps its last purchase
    assert p.cycle is None and p.cats == {"d": [7, 0, []]} and p.first_purchase_ts is None


def test_identity_merge_keeps_the_longer_purchase_history_cycle() -> None:
    from triggers.events import event_from_mapping
    from triggers.merge import merge_profiles
    known, anonymous = Profile(), Profile()
    for raw in buys("k", 5, 15, 25):
        known.update(event_from_mapping(raw))
    for raw in buys("a", 1, 3):
        anonymous.update(event_from_mapping(raw))
    merged = merge_profiles(known, anonymous)
    assert merged.cycle == known.cycle and merged.first_purchase_ts == 1 * DAY


def test_hot_reload_keeps_the_timer_unless_what_arms_it_changed() -> None:
    from config.loader import validate_config
    eng = engine({"refill": REFILL})
    feed(eng, buys("u", 0, 10, 20))
    eng.reconfigure(validate_config({"scenes": {"refill": {**REFILL, "margin": "5d"}}})
                    .scene_list())
    assert pending(eng) == [("refill", "u", 32 * DAY)]  # armed with the old margin
    eng.reconfigure(validate_config({"scenes": {"refill": {**REFILL, "category": "tea"}}})
                    .scene_list())
    assert pending(eng) == []


def test_explain_names_the_overdue_purchase() -> None:
    from config.loader import validate_config
    from triggers.events import Trigger
    from triggers.explain import fired_why
    scene = validate_config({"scenes": {"c": {**REFILL, "category": "coffee"}}}).scene_list()[0]
    text = fired_why(scene, Trigger("c", "u", None, 32 * DAY))
    assert text == ("no purchase of coffee by 00:00: the expected next purchase "
                    "(newest + mean interval) plus 2d")
