"""Who is this user? Browsing style, value segment and habit tags, computed
purely from :class:`triggers.profile.Profile` (no I/O, no wall clock).

The one implementation: content selection (``channels.content.segments``), strategy
tags (``strategies.tags``) and scene user filters (``triggers.userfilter``)
all use it. Thresholds come from the ``content:`` config section; they are
typed here as read-only protocols so ``triggers/`` never imports ``config/``.

The rules (documented in docs/content.md):

* **Browsing style.** ``activity = views + searches + category_views + promo_views``
  (a category or promo page is activity of its own; a view that came from a
  category/promo list counts once as a view and once as that signal, which is
  what we want: it says how the user navigates). Below ``min_activity`` the
  style is ``undetermined``. Otherwise each signal's share of activity is
  compared with its threshold; among the signals at or over threshold the
  largest share wins, ties broken search > promo > category (the more
  specific intent first). None over threshold: ``undetermined``.
* **Value segment** (RFM-style, amount x frequency, recency for lapse): no
  purchase, or the last purchase older than ``lapse_after`` at ``now_ms``:
  ``new_or_lapsed``. Else ``champion`` if purchases >= champion_min_purchases
  AND amount >= champion_min_amount; ``loyal`` if purchases >=
  loyal_min_purchases OR amount >= loyal_min_amount; else ``promising``.
* **Habit tags.** With at least ``min_events`` events: ``tod:<part>`` when one
  part of the local day (night 0-6, morning 6-12, afternoon 12-18, evening
  18-24) holds >= ``day_part_share`` of the activity; ``weekend`` when the
  weekend share >= ``weekend_share``, else ``weekday`` (weekend days are 2 of
  7, so a weekday habit is the common case). Hours are shifted to the user's
  zone at its current UTC offset; weekday/weekend are counted in UTC.
  ``worktime``: a ``weekday`` user with >= ``worktime_share`` of the activity
  in local hours 9-17 (the profile keeps hours and weekdays apart, so this
  reads "a weekday shopper who shops in office hours").
* **Purchase cycle** (triggers.cycle): with at least ``cycle_min_intervals``
  intervals between purchase occasions and a spread (sd / mean) at most
  ``cycle_max_spread``: ``cycle:<weekly|monthly|quarterly|long>`` for a mean
  interval up to 10, 45, 120 days, or longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from triggers.cycle import as_cycle
from triggers.profile import Profile
from triggers.zones import zone_or_none

SEARCH_DRIVEN = "search_driven"
CATEGORY_BROWSER = "category_browser"
PROMO_DRIVEN = "promo_driven"
UNDETERMINED = "undetermined"
STYLES = (SEARCH_DRIVEN, CATEGORY_BROWSER, PROMO_DRIVEN, UNDETERMINED)

CHAMPION = "champion"
LOYAL = "loyal"
PROMISING = "promising"
NEW_OR_LAPSED = "new_or_lapsed"
SEGMENTS = (CHAMPION, LOYAL, PROMISING, NEW_OR_LAPSED)

DAY_PARTS = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))
WORK_HOURS = (9, 17)  # local hours [9, 17)
WORKTIME = "worktime"
_DAY_MS = 86_400_000
# (tag, mean interval up to): the first that fits
CYCLES = (("weekly", 10 * _DAY_MS), ("monthly", 45 * _DAY_MS), ("quarterly", 120 * _DAY_MS),
          ("long", None))

# Every tag behaviour_tag_set can produce, by group (at most one per group).
STYLE_TAG = "style:"
SEGMENT_TAG = "segment:"
TOD_TAG = "tod:"
CYCLE_TAG = "cycle:"
TAG_GROUPS: dict[str, frozenset[str]] = {
    "style": frozenset(STYLE_TAG + s for s in STYLES),
    "segment": frozenset(SEGMENT_TAG + s for s in SEGMENTS),
    "tod": frozenset(TOD_TAG + part for part, _, _ in DAY_PARTS),
    "week": frozenset({"weekday", "weekend"}),
    "work": frozenset({WORKTIME}),
    "cycle": frozenset(CYCLE_TAG + name for name, _ in CYCLES),
}
BEHAVIOUR_TAGS = frozenset().union(*TAG_GROUPS.values())


class StyleThresholds(Protocol):
    @property
    def min_activity(self) -> int: ...
    @property
    def search_share(self) -> float: ...
    @property
    def category_share(self) -> float: ...
    @property
    def promo_share(self) -> float: ...


class SegmentThresholds(Protocol):
    @property
    def champion_min_purchases(self) -> int: ...
    @property
    def champion_min_amount(self) -> float: ...
    @property
    def loyal_min_purchases(self) -> int: ...
    @property
    def loyal_min_amount(self) -> float: ...
    @property
    def lapse_after(self) -> int: ...


class HabitThresholds(Protocol):
    @property
    def min_events(self) -> int: ...
    @property
    def day_part_share(self) -> float: ...
    @property
    def weekend_share(self) -> float: ...
    @property
    def worktime_share(self) -> float: ...
    @property
    def cycle_min_intervals(self) -> int: ...
    @property
    def cycle_max_spread(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Segmentation:
    style: str
    segment: str
    tags: tuple[str, ...]


def browsing_style(profile: Profile, rules: StyleThresholds) -> str:
    signals = (
        (SEARCH_DRIVEN, profile.searches, rules.search_share),
        (PROMO_DRIVEN, profile.promo_views, rules.promo_share),
        (CATEGORY_BROWSER, profile.category_views, rules.category_share),
    )
    activity = profile.views + profile.searches + profile.category_views + profile.promo_views
    if activity < rules.min_activity:
        return UNDETERMINED
    best = UNDETERMINED
    best_share = -1.0
    for style, count, threshold in signals:  # order = tie-break order
        share = count / activity
        if share >= threshold and share > best_share:
            best, best_share = style, share
    return best


def value_segment(profile: Profile, rules: SegmentThresholds, now_ms: int) -> str:
    last = profile.last_purchase_ts
    if profile.purchases <= 0 or last is None or now_ms - last > rules.lapse_after:
        return NEW_OR_LAPSED
    amount = profile.amount_cents / 100
    if profile.purchases >= rules.champion_min_purchases and amount >= rules.champion_min_amount:
        return CHAMPION
    if profile.purchases >= rules.loyal_min_purchases or amount >= rules.loyal_min_amount:
        return LOYAL
    return PROMISING


def utc_offset_hours(tz_name: str | None, now_ms: int) -> int:
    """The zone's whole-hour offset at ``now_ms`` (0 for an unknown zone or a
    time without a calendar date; the delivery policy suppresses those)."""
    if not tz_name:
        return 0
    zone = zone_or_none(tz_name)
    if zone is None:
        return 0
    try:
        offset = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(zone).utcoffset()
    except (ValueError, OverflowError, OSError):  # any 64-bit ts; datetime: years 1-9999
        return 0
    return 0 if offset is None else round(offset.total_seconds() / 3600)


def habit_tags(profile: Profile, rules: HabitThresholds, now_ms: int,
               default_tz: str | None = None, zone: str | None = None) -> tuple[str, ...]:
    """``zone``: the user's zone when resolved already (the delivery's
    recipient: the directory's first); else the events', else ``default_tz``."""
    total = profile.weekday + profile.weekend
    cycle = cycle_tag(profile, rules)
    if total < rules.min_events:
        return () if cycle is None else (cycle,)
    tags: list[str] = []
    shift = utc_offset_hours(zone or profile.tz or default_tz, now_ms)
    local = [0] * 24
    for hour, count in enumerate(profile.hours):
        local[(hour + shift) % 24] += count
    hours_total = sum(local)
    if hours_total:
        for part, start, end in DAY_PARTS:
            if sum(local[start:end]) / hours_total >= rules.day_part_share:
                tags.append(TOD_TAG + part)
                break
    weekend = profile.weekend / total >= rules.weekend_share
    tags.append("weekend" if weekend else "weekday")
    start, end = WORK_HOURS
    if not weekend and hours_total and sum(local[start:end]) / hours_total >= rules.worktime_share:
        tags.append(WORKTIME)
    if cycle is not None:
        tags.append(cycle)
    return tuple(tags)


def cycle_tag(profile: Profile, rules: HabitThresholds) -> str | None:
    """``cycle:<name>`` when the purchase cycle is sure enough (else None)."""
    cycle = as_cycle(profile.cycle)
    if cycle is None or cycle.intervals < rules.cycle_min_intervals:
        return None
    if not cycle.spread_at_most(rules.cycle_max_spread):
        return None
    for name, up_to in CYCLES:
        if up_to is None or cycle.mean_ms <= up_to:
            return CYCLE_TAG + name
    return None  # unreachable: the last bucket has no bound


def classify(profile: Profile | None, styles: StyleThresholds, segments: SegmentThresholds,
             habits: HabitThresholds, now_ms: int,
             default_tz: str | None = None, zone: str | None = None) -> Segmentation:
    """All three at once; a user with no profile is undetermined / new."""
    if profile is None:
        return Segmentation(UNDETERMINED, NEW_OR_LAPSED, ())
    return Segmentation(
        browsing_style(profile, styles),
        value_segment(profile, segments, now_ms),
        habit_tags(profile, habits, now_ms, default_tz, zone),
    )


def behaviour_tag_set(seg: Segmentation) -> frozenset[str]:
    """The derived tags of a segmentation: habits, ``style:<s>``, ``segment:<s>``."""
    return frozenset({*seg.tags, STYLE_TAG + seg.style, SEGMENT_TAG + seg.segment})
