"""``absence``: ``start`` arms a timer, ``cancel`` disarms it, the engine's
clock fires it ``after`` later (SEMANTICS.md, "Kinds"). The timer itself
(deadline, arm order, the heap) belongs to the engine (:mod:`triggers.engine`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from triggers.durations import format_duration_ms
from triggers.kinds.base import Limits, Shape, Slot, canon
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


KIND = AbsenceKind()
