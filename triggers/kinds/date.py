"""``date``: fires ``offset_days`` before or after a date attribute
(birthday, anniversary, renewal) at local ``at`` in the user's zone, once
per period (docs/semantics-notes.md, "The date kind").

An ``attributes`` event arms the timer at the first occurrence at or after
the event whose period (the year of the attribute's day) is later than the
last fired one, or disarms it when the user has no such date. When it fires
(or its user filter or the trigger budget refuses it: consumed all the
same) the engine asks :meth:`DateRule.fired` for the next period's time.
The armed and the last fired period sit in the ``fires`` slot beside the
timer (keys ``armed`` and ``fired``), so a reload that drops the scene drops
them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo

from triggers.dates import ATTRIBUTES, fire_ms, year_of
from triggers.events import Event, Trigger
from triggers.kinds.base import Limits, Shape, Slot, canon
from triggers.kinds.explaining import Said, SceneExplanation, hm, plain
from triggers.predicates import Fields, Matcher, Predicate, parse_predicate
from triggers.state import UserState
from triggers.userfilter import UserFilter
from triggers.zones import zone_or_none

Every = Literal["year", "none"]
ARMED = "armed"
FIRED = "fired"


@dataclass(frozen=True, slots=True)
class DateScene:
    name: str
    attribute: str
    offset_days: int = 0
    at_minute: int = 9 * 60  # local time of day, in minutes
    every: Every = "year"
    timezone: str = "UTC"  # for users whose events named no zone
    user: UserFilter | None = None
    kind: str = field(default="date", init=False)

    @property
    def taken(self) -> Predicate:
        """What (re)arms the timer: an attributes event."""
        return parse_predicate({"type": ATTRIBUTES})


class DateRule:
    """Every state transition of a ``date`` scene."""

    __slots__ = ("_at", "_attribute", "_every", "_offset", "_taken", "_zone", "name", "timer",
                 "user")

    def __init__(self, scene: DateScene, _limits: Limits) -> None:
        self.name = scene.name
        self.timer = True
        self.user = scene.user
        self._taken: Matcher = scene.taken.compile()
        self._attribute = scene.attribute
        self._offset = scene.offset_days
        self._at = time(scene.at_minute // 60, scene.at_minute % 60)
        self._every = scene.every
        self._zone = zone_or_none(scene.timezone) or ZoneInfo("UTC")

    def apply(self, state: UserState, fields: Fields, ts: int, taken_holds: bool | None,
              _second: bool | None) -> int | Literal[False] | None:
        if not (self._taken(fields) if taken_holds is None else taken_holds):
            return False
        periods = state.fires.get(self.name, {})
        found = self.next_fire(state, ts, periods.get(FIRED))
        armed = state.timer.get(self.name)
        if found is None:
            periods.pop(ARMED, None)
            return None if armed is not None else False
        period, deadline = found
        state.fires[self.name] = {**periods, ARMED: period}
        if armed is not None and armed[0] == deadline:
            return False
        return deadline

    def fired(self, state: UserState, deadline: int) -> int | None:
        """The timer at ``deadline`` was consumed: its period is fired; the
        next period's time to arm (None: no more)."""
        periods = dict(state.fires.get(self.name, {}))
        period = periods.pop(ARMED, None)
        if period is not None:
            periods[FIRED] = period
        state.fires[self.name] = periods
        found = self.next_fire(state, deadline, periods.get(FIRED))
        if found is None:
            return None
        periods[ARMED] = found[0]
        return found[1]

    def next_fire(self, state: UserState, ts: int, fired: int | None) -> tuple[int, int] | None:
        """(period, time) of the first occurrence at or after ``ts`` of a
        period after ``fired``."""
        stored = state.profile.dates.get(self._attribute)
        if stored is None:
            return None
        zone = zone_or_none(state.profile.tz) or self._zone
        first = int(stored[:4]) if stored[0] != "-" else None
        if self._every == "none":
            if first is None:
                return None
            years = range(first, first + 1)
        else:
            # An offset is at most 366 days: the period is within three years of ts.
            now = year_of(ts, zone)
            if now is None:
                return None
            low = max(now - 2, first or 1)  # a full date: from its own year on
            years = range(low, min(low + 7, 10_000))
        for year in years:
            if fired is not None and year <= fired:
                continue
            when = fire_ms(stored, year, self._offset, self._at, zone)
            if when is not None and when >= ts:
                return year, when
        return None

    def prune(self, state: UserState) -> None:
        """A timer is pruned by firing (or by losing its date), never by age."""


class DateKind:
    name = "date"
    timer = True
    slot: Slot = "timer"
    reads_profile = True

    def rule(self, scene: DateScene, limits: Limits) -> DateRule:
        return DateRule(scene, limits)

    def predicates(self, scene: DateScene) -> tuple[Predicate | None, ...]:
        return scene.taken, None

    def shape(self, scene: DateScene) -> Shape:
        # `per`: a timer armed on another attribute means nothing here.
        return Shape(scene.kind, per=scene.attribute, start=canon(scene.taken))

    def describe(self, scene: DateScene) -> str:
        days = scene.offset_days
        when = ("on" if days == 0 else f"{abs(days)} day{'s' * (abs(days) != 1)} "
                f"{'before' if days < 0 else 'after'}")
        every = "every year" if scene.every == "year" else "once"
        return (f"date: {when} {scene.attribute} at {scene.at_minute // 60:02d}:"
                f"{scene.at_minute % 60:02d} local, {every}")


    def explain(self, scene: DateScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return plain(scene, fires)  # each fire's why says it all: no story in the events

    def why(self, scene: DateScene, trigger: Trigger, state: UserState | None) -> str:
        return date_why(scene, trigger, state)


def date_why(scene: DateScene, trigger: Trigger, state: UserState | None) -> str:
    """The date and offset behind one fire, with the stored attribute when
    the caller has the state."""
    days = scene.offset_days
    when = ("on" if days == 0 else f"{abs(days)} day{'s' * (abs(days) != 1)} "
            f"{'before' if days < 0 else 'after'}")
    stored = None if state is None else state.profile.dates.get(scene.attribute)
    value = "" if stored is None else f" ({stored})"
    return (f"{when} {scene.attribute}{value} at {scene.at_minute // 60:02d}:"
            f"{scene.at_minute % 60:02d} local: fired {hm(trigger.ts)}")


KIND = DateKind()
