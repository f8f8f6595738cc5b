"""``absence``: ``start`` arms a timer, ``cancel`` disarms it, the engine's
clock fires it ``after`` later (SEMANTICS.md, "Kinds"). The timer itself
(deadline, arm order, the heap) belongs to the engine (:mod:`triggers.engine`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.kinds.base import Limits, Shape, Slot, canon
from triggers.kinds.explaining import (
    Fired,
    Refusal,
    Said,
    SceneExplanation,
    a_noun,
    hm,
    noun,
)
from triggers.predicates import Fields, Matcher, Predicate
from triggers.state import UserState
from triggers.userfilter import UserFilter


@dataclass(frozen=True, slots=True)
class AbsenceScene:
    name: str
    start: Predicate
    after_ms: int
    cancel: Predicate | None = None
    user: UserFilter | None = None
    kind: str = field(default="absence", init=False)


class AbsenceRule:
    """A matching ``cancel`` disarms; else a matching ``start`` (re)arms at
    ``ts + after``. The ``user`` filter is asked when the timer is due."""

    __slots__ = ("_after", "_cancel", "_start", "name", "timer", "user")

    def __init__(self, scene: AbsenceScene, _limits: Limits) -> None:
        self.name = scene.name
        self.timer = True
        self.user = scene.user
        self._start: Matcher = scene.start.compile()
        self._cancel: Matcher | None = scene.cancel.compile() if scene.cancel else None
        self._after = scene.after_ms

    def apply(self, state: UserState, fields: Fields, ts: int, start_holds: bool | None,
              cancel_holds: bool | None) -> int | Literal[False] | None:
        if cancel_holds is None:
            cancel_holds = self._cancel is not None and self._cancel(fields)
        if cancel_holds:
            return None
        if self._start(fields) if start_holds is None else start_holds:
            return ts + self._after
        return False

    def prune(self, state: UserState) -> None:
        """A timer is pruned by firing (or by a cancel), never by age."""


def absence_why(scene: AbsenceScene, trigger: Trigger) -> str:
    return (f"{noun(scene.start, False)} at {hm(trigger.ts - scene.after_ms)}, no "
            f"{noun(scene.cancel, False)} within {format_duration_ms(scene.after_ms)}")


def explain_absence(scene: AbsenceScene, events: Sequence[Event], fires: list[Trigger],
                    clock_ms: int | None, said: Said) -> SceneExplanation:
    start, cancel = scene.start.compile(), scene.cancel.compile() if scene.cancel else None
    deadlines = {t.ts for t in fires}
    refused: list[Refusal] = []
    armed: Event | None = None
    story: str | None = None

    def settle(until_ts: int | None) -> None:
        """The armed timer's end, seen from the next event (or the end)."""
        nonlocal armed, story
        if armed is None:
            return
        deadline = armed.ts + scene.after_ms
        if deadline in deadlines:
            armed = None
        elif until_ts is None and (clock_ms is None or deadline >= clock_ms):
            story = (f"timer armed by the {noun(scene.start, False)} at {hm(armed.ts)} is "
                     f"pending until {hm(deadline)}" +
                     ("" if clock_ms is None else f" (clock {hm(clock_ms)})"))
        elif until_ts is None or deadline < until_ts:
            why = said.get((scene.name, deadline)) or (
                "the scene's user filter refused this user" if scene.user is not None
                else "the timer was consumed")
            refused.append(Refusal(deadline, None, why))
            story = f"timer of the {noun(scene.start, False)} at {hm(armed.ts)}: {why}"
            armed = None

    for event in events:
        settle(event.ts)
        if cancel is not None and cancel(event.fields):
            if armed is not None:
                story = (f"the {noun(scene.start, False)} at {hm(armed.ts)} was cancelled by "
                         f"{a_noun(scene.cancel)} at {hm(event.ts)}")
            armed = None
        elif start(event.fields):
            # A re-arm tells no story of its own: the armed timer's end
            # (pending, consumed or fired) always follows and is the one told.
            armed = event
    settle(None)
    fired = tuple(Fired(t, absence_why(scene, t)) for t in fires)
    missing = None
    if not fires:
        missing = story or f"no {noun(scene.start)}"
    return SceneExplanation(scene.name, scene.kind, fired, tuple(refused), missing)


class AbsenceKind:
    name = "absence"
    timer = True
    slot: Slot = "timer"
    reads_profile = False

    def rule(self, scene: AbsenceScene, limits: Limits) -> AbsenceRule:
        return AbsenceRule(scene, limits)

    def predicates(self, scene: AbsenceScene) -> tuple[Predicate | None, ...]:
        return scene.start, scene.cancel

    def shape(self, scene: AbsenceScene) -> Shape:
        return Shape(scene.kind, start=canon(scene.start))

    def describe(self, scene: AbsenceScene) -> str:
        text = f"absence after {format_duration_ms(scene.after_ms)}"
        if scene.cancel:
            text += " unless cancelled"
        return text


    def explain(self, scene: AbsenceScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return explain_absence(scene, events, fires, clock_ms, said)

    def why(self, scene: AbsenceScene, trigger: Trigger, state: UserState | None) -> str:
        return absence_why(scene, trigger)


KIND = AbsenceKind()
