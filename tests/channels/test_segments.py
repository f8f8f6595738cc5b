"""Browsing style, value segment and habit tags from real profile updates."""

from __future__ import annotations

import pytest

from channels.content.segments import browsing_style, classify, habit_tags, value_segment
from config.content_models import HabitRules, SegmentRules, StyleRules
from tests.channels.content_factories import DAY, HOUR, T0, _event, user_state
from triggers.profile import Profile
from triggers.state import UserState

STYLES = ("search_driven", "category_browser", "promo_driven", "undetermined")
SEGMENTS = ("champion", "loyal", "promising", "new_or_lapsed")


@pytest.mark.parametrize("style", STYLES)
def test_browsing_style_follows_the_documented_rule(style: str) -> None:
    state = user_state("u1", style)
    assert browsing_style(state.profile, StyleRules()) == style


def test_too_little_activity_is_undetermined() -> None:
    profile = Profile()
    profile.update(_event("u", T0, "search", query="x"))
    assert browsing_style(profile, StyleRules()) == "undetermined"
    profile.update(_event("u", T0 + 1, "search", query="y"))
    profile.update(_event("u", T0 + 2, "search", query="z"))
    assert browsing_style(profile, StyleRules()) == "search_driven"


def test_largest_share_wins_and_thresholds_come_from_config() -> None:
    profile = Profile()
    for i in range(3):
        profile.update(_event("u", T0 + i, "search", query="q"))
    for i in range(5):
        profile.update(_event("u", T0 + 10 + i, "page", page="/promo/x"))
    assert browsing_style(profile, StyleRules()) == "promo_driven"
    strict = StyleRules(promo_share=0.9, search_share=0.3)
    assert browsing_style(profile, strict) == "search_driven"


@pytest.mark.parametrize("segment", SEGMENTS)
def test_value_segment_groups(segment: str) -> None:
    state = user_state("u1", "undetermined", segment)
    assert value_segment(state.profile, SegmentRules(), T0) == segment


def test_a_buyer_lapses_after_the_recency_limit() -> None:
    state = user_state("u1", "undetermined", "champion")
    rules = SegmentRules(lapse_after=30 * DAY)
    assert value_segment(state.profile, rules, T0 + 20 * DAY) == "champion"
    assert value_segment(state.profile, rules, T0 + 40 * DAY) == "new_or_lapsed"


def test_amount_alone_makes_loyal_not_champion() -> None:
    profile = Profile()
    profile.update(_event("u", T0, "purchase", price="999.00"))
    assert value_segment(profile, SegmentRules(), T0) == "loyal"


def test_habit_tags_use_the_users_zone() -> None:
    profile = Profile()
    # 12:00-13:00 UTC on a Tuesday = 20:00-21:00 in Shanghai.
    for i in range(6):
        profile.update(_event("u", T0 + 10 * HOUR + i * 60_000, "view", product_id="1"))
    assert habit_tags(profile, HabitRules(), T0, "UTC") == ("tod:afternoon", "weekday",
                                                            "worktime")
    assert habit_tags(profile, HabitRules(), T0, "Asia/Shanghai") == ("tod:evening", "weekday")
    profile.tz = "America/New_York"  # 08:00 there (EDT, UTC-4)
    assert habit_tags(profile, HabitRules(), T0, "Asia/Shanghai") == ("tod:morning", "weekday")


def test_weekend_tag_and_minimum_events() -> None:
    profile = Profile()
    saturday = T0 + 4 * DAY
    for i in range(4):
        profile.update(_event("u", saturday + i * HOUR, "view", product_id="1"))
    assert habit_tags(profile, HabitRules(), T0) == ()
    profile.update(_event("u", saturday + 5 * HOUR, "view", product_id="1"))
    assert "weekend" in habit_tags(profile, HabitRules(), T0)


def test_profile_wire_round_trip_and_older_shorter_lists() -> None:
    state = user_state("u1", "category_browser", "loyal", tz="Europe/Moscow")
    again = UserState.decode(state.encode()).profile
    assert again.to_wire() == state.profile.to_wire()
    assert again.last_category == "electronics.smartphone" and again.tz == "Europe/Moscow"
    old = Profile.from_wire(state.profile.to_wire()[:14])
    assert old.last_category is None and old.tz is None and old.views == 3


def test_classify_without_state() -> None:
    seg = classify(None, StyleRules(), SegmentRules(), HabitRules(), T0)
    assert (seg.style, seg.segment, seg.tags) == ("undetermined", "new_or_lapsed", ())
