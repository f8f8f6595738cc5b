"""Per-scene user filters: fire a scene only for users whose behaviour tags
(computed from their :class:`~triggers.profile.Profile`) fit.

The filter is checked only when a scene would otherwise fire, so scenes
without one, and events that fire nothing, never classify a profile. Only
the parts of the classification the filter names are computed (a
segment-only filter never looks at habits or zones).

Tags set by strategies (``churned``, ``prefers_<channel>``) live in the tag
store (Redis) and are not visible here: the engine does no I/O. Config
validation rejects them (see ``config.scene_models``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triggers.classify import (
    SEGMENT_TAG,
    STYLE_TAG,
    TAG_GROUPS,
    HabitThresholds,
    SegmentThresholds,
    StyleThresholds,
    browsing_style,
    habit_tags,
    value_segment,
)
from triggers.profile import Profile
from triggers.tagcondition import TagCondition


@dataclass(frozen=True, slots=True)
class ClassifyRules:
    """The thresholds of the ``content:`` section and the default time zone
    (``delivery.default_timezone``): the same ones content and tags use."""

    styles: StyleThresholds
    segments: SegmentThresholds
    habits: HabitThresholds
    default_tz: str | None = None


@dataclass(frozen=True, slots=True)
class UserFilter:
    """All stated conditions must hold. ``tags_*`` name behaviour tags
    (``triggers.classify.BEHAVIOUR_TAGS``); ``segments`` / ``styles`` are
    shorthands for ``segment:<s>`` / ``style:<s>`` in ``tags_any``."""

    rules: ClassifyRules
    tags_all: frozenset[str] = frozenset()
    tags_any: frozenset[str] = frozenset()
    tags_none: frozenset[str] = frozenset()
    segments: frozenset[str] | None = None
    styles: frozenset[str] | None = None
    # Which parts of the classification the conditions look at.
    _needs: tuple[bool, bool, bool] = field(init=False, repr=False, compare=False)
    _condition: TagCondition = field(init=False, repr=False, compare=False)
    _described: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        named = self.tags_all | self.tags_any | self.tags_none
        style = self.styles is not None or bool(named & TAG_GROUPS["style"])
        segment = self.segments is not None or bool(named & TAG_GROUPS["segment"])
        habits = bool(named & (TAG_GROUPS["tod"] | TAG_GROUPS["week"] | TAG_GROUPS["work"]
                               | TAG_GROUPS["cycle"]))
        object.__setattr__(self, "_needs", (style, segment, habits))
        object.__setattr__(self, "_condition",
                           TagCondition(self.tags_all, self.tags_any or None, self.tags_none))
        object.__setattr__(self, "_described", self._describe())

    def tags(self, profile: Profile, now_ms: int) -> frozenset[str]:
        """The behaviour tags this filter looks at (a subset of the full set:
        groups the filter never names are left out)."""
        need_style, need_segment, need_habits = self._needs
        rules = self.rules
        tags: set[str] = set()
        if need_style:
            tags.add(STYLE_TAG + browsing_style(profile, rules.styles))
        if need_segment:
            tags.add(SEGMENT_TAG + value_segment(profile, rules.segments, now_ms))
        if need_habits:
            tags.update(habit_tags(profile, rules.habits, now_ms, rules.default_tz))
        return frozenset(tags)

    def describe(self) -> str:
        """The conditions as configured: ``tags_all {a,b}; segments {vip}``."""
        return self._described

    def _describe(self) -> str:
        parts = [(name, sorted(values)) for name, values in (
            ("tags_all", self.tags_all), ("tags_any", self.tags_any),
            ("tags_none", self.tags_none), ("segments", self.segments or ()),
            ("styles", self.styles or ())) if values]
        return "; ".join(f"{name} {{{','.join(values)}}}" for name, values in parts)

    def admits(self, profile: Profile, now_ms: int) -> bool:
        """Whether the user passes at ``now_ms`` (the trigger's ts)."""
        return self.refuses(profile, now_ms) is None

    def refuses(self, profile: Profile, now_ms: int) -> frozenset[str] | None:
        """None when the user passes at ``now_ms``; else the tags the profile
        had (of those the filter looks at), classified once for both."""
        tags = self.tags(profile, now_ms)
        if not self._condition.holds(tags):
            return tags
        if self.segments is not None and not any(
                SEGMENT_TAG + s in tags for s in self.segments):
            return tags
        if self.styles is None or any(STYLE_TAG + s in tags for s in self.styles):
            return None
        return tags

class Refused:
    """What a rule returns when its scene would fire but the user filter
    refuses (the engine turns it into a :class:`triggers.events.Refusal`)."""

    __slots__ = ("had", "key")

    def __init__(self, key: str | None, had: frozenset[str]) -> None:
        self.key = key
        self.had = had
