"""``replenishment``: fires when a user's next purchase is overdue.

Every purchase (``type: purchase``, of ``category`` when one is set) re-arms
one timer at ``last purchase + mean interval + margin``, from the purchase
cycle the profile estimates (:mod:`triggers.cycle`), provided the estimate is
sure enough (``min_intervals`` intervals, spread at most ``max_spread``);
otherwise the purchase disarms it. The engine's clock fires it, as an
``absence`` timer (docs/semantics-notes.md, "The replenishment kind")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from triggers.cycle import Cycle, as_cycle, category_cycle
from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.kinds.base import Limits, Shape, Slot, canon
from triggers.kinds.explaining import Said, SceneExplanation, hm, plain
from triggers.predicates import Fields, Matcher, Predicate, parse_predicate
from triggers.state import UserState
from triggers.userfilter import UserFilter


@dataclass(frozen=True, slots=True)
class ReplenishmentScene:
    name: str
    margin_ms: int
    category: str | None = None
    min_intervals: int = 2
    max_spread: float | None = None
    user: UserFilter | None = None
    kind: str = field(default="replenishment", init=False)

    @property
    def purchase(self) -> Predicate:
        """What re-arms the timer: a purchase (of the category)."""
        spec: dict[str, str] = {"type": "purchase"}
        if self.category is not None:
            spec["category"] = self.category
        return parse_predicate(spec)


class ReplenishmentRule:
    """A matching purchase (the profile already counts it) arms the timer at
    the expected next purchase plus ``margin``, or disarms it when the cycle
    is not sure enough. Re-arming at the deadline already armed is no change
    (a late purchase, or one of the same occasion that moves nothing)."""

    __slots__ = ("_category", "_margin", "_max_spread", "_min", "_purchase", "name", "timer",
                 "user")

    def __init__(self, scene: ReplenishmentScene, _limits: Limits) -> None:
        self.name = scene.name
        self.timer = True
        self.user = scene.user
        self._purchase: Matcher = scene.purchase.compile()
        self._category = scene.category
        self._margin = scene.margin_ms
        self._min = scene.min_intervals
        self._max_spread = scene.max_spread

    def apply(self, state: UserState, fields: Fields, ts: int, purchase_holds: bool | None,
              _second: bool | None) -> int | Literal[False] | None:
        if not (self._purchase(fields) if purchase_holds is None else purchase_holds):
            return False
        deadline = self.deadline(state)
        armed = state.timer.get(self.name)
        if deadline is None:
            return None if armed is not None else False
        if armed is not None and armed[0] == deadline:
            return False
        return deadline

    def deadline(self, state: UserState) -> int | None:
        """When the timer is due from the user's profile (None: not sure enough)."""
        profile = state.profile
        last: int | None
        cycle: Cycle | None
        if self._category is None:
            last, cycle = profile.last_purchase_ts, as_cycle(profile.cycle)
        else:
            found = category_cycle(profile.cats, self._category)
            last, cycle = found if found is not None else (None, None)
        if last is None or cycle is None or cycle.intervals < self._min:
            return None
        if self._max_spread is not None and not cycle.spread_at_most(self._max_spread):
            return None
        return last + cycle.mean_ms + self._margin

    def prune(self, state: UserState) -> None:
        """A timer is pruned by firing (or by a disarming purchase), never by age."""


def replenishment_why(scene: ReplenishmentScene, trigger: Trigger) -> str:
    of = f" of {scene.category}" if scene.category is not None else ""
    return (f"no purchase{of} by {hm(trigger.ts)}: the expected next purchase "
            f"(newest + mean interval) plus {format_duration_ms(scene.margin_ms)}")


class ReplenishmentKind:
    name = "replenishment"
    timer = True
    slot: Slot = "timer"
    reads_profile = True

    def rule(self, scene: ReplenishmentScene, limits: Limits) -> ReplenishmentRule:
        return ReplenishmentRule(scene, limits)

    def predicates(self, scene: ReplenishmentScene) -> tuple[Predicate | None, ...]:
        return scene.purchase, None

    def shape(self, scene: ReplenishmentScene) -> Shape:
        return Shape(scene.kind, start=canon(scene.purchase))

    def describe(self, scene: ReplenishmentScene) -> str:
        of = f" of {scene.category}" if scene.category is not None else ""
        text = (f"replenishment{of}: next purchase overdue by "
                f"{format_duration_ms(scene.margin_ms)}, from {scene.min_intervals}+ intervals")
        if scene.max_spread is not None:
            text += f", spread <= {scene.max_spread:g}"
        return text


    def explain(self, scene: ReplenishmentScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return plain(scene, fires)  # no story read from the events yet

    def why(self, scene: ReplenishmentScene, trigger: Trigger, state: UserState | None) -> str:
        return replenishment_why(scene, trigger)


KIND = ReplenishmentKind()
