"""Delivery feedback the system writes about itself (delivered, failed) does
not count as the shopper's behaviour; opens and clicks do."""

from __future__ import annotations

from channels.feedback.events import KINDS
from triggers.events import Event
from triggers.profile import SYSTEM_EVENT_TYPES, Profile

NIGHT = 3 * 3_600_000  # 03:00 UTC on 1970-01-01, a Thursday
NOON = 12 * 3_600_000


def profile_after(*events: Event) -> Profile:
    profile = Profile()
    for event in events:
        profile.update(event)
    return profile


def test_delivered_and_failed_leave_the_profile_as_it_was() -> None:
    view = Event("u", NOON, "view", {"product_id": "p1", "category": "shoes"})
    alone = profile_after(view)
    with_feedback = profile_after(
        view, Event("u", NIGHT + 86_400_000, "delivered", {"channel": "inbox"}),
        Event("u", NIGHT + 2 * 86_400_000, "failed", {"channel": "webhook"}))
    assert with_feedback.to_wire() == alone.to_wire()


def test_an_open_is_the_shoppers_own_and_counts() -> None:
    view = Event("u", NOON, "view", {"product_id": "p1"})
    opened = profile_after(view, Event("u", NIGHT + 86_400_000, "opened", {"channel": "inbox"}))
    assert opened.last_ts == NIGHT + 86_400_000
    assert opened.hours[3] == 1


def test_system_types_are_feedback_kinds_and_the_catalog_fanout() -> None:
    from triggers.fanout import FANOUT_TYPE

    assert set(KINDS) | {FANOUT_TYPE} >= SYSTEM_EVENT_TYPES
    assert FANOUT_TYPE in SYSTEM_EVENT_TYPES
