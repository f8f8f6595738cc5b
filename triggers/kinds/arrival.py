"""``arrival``: fire on every matching event, at most once per ``cooldown``
(SEMANTICS.md, "Kinds")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.kinds.base import Limits, Shape, Slot, key_of, qualifiers
from triggers.kinds.explaining import (
    MAX_REFUSALS,
    Fired,
    Refusal,
    Said,
    SceneExplanation,
    cooling,
    for_key,
    hm,
    not_fired_reason,
    noun,
    per_value,
)
from triggers.predicates import Fields, Predicate
from triggers.state import UserState
from triggers.userfilter import Refused, UserFilter


@dataclass(frozen=True, slots=True)
class ArrivalScene:
    name: str
    when: Predicate
    per: str | None = None
    cooldown_ms: int | None = None
    user: UserFilter | None = None
    kind: str = field(default="arrival", init=False)


class ArrivalRule:
    """`arrival`: fire on every matching event unless fired for (user, key)
    within `cooldown` or the user fails the scene's `user` filter."""

    __slots__ = ("_cooldown", "_late", "_max_keys", "_per", "_when", "name", "timer", "user")

    def __init__(self, scene: ArrivalScene, limits: Limits) -> None:
        self.name = scene.name
        self.timer = False
        self._when = scene.when.compile()
        self._per = scene.per
        self._cooldown = scene.cooldown_ms
        self.user = scene.user
        self._late = limits.late_ms
        self._max_keys = limits.max_keys

    def apply(
        self, state: UserState, fields: Fields, ts: int, when_holds: bool | None = None,
        _unused: bool | None = None,
    ) -> str | Refused | Literal[False] | None:
        if not (self._when(fields) if when_holds is None else when_holds):
            return False
        key = key_of(self._per, fields)
        if key is None:
            return False
        user = self.user
        if self._cooldown is None:
            if user is not None:
                had = user.refuses(state.profile, ts)
                if had is not None:
                    return Refused(None if self._per is None else key, had)
            return None if self._per is None else key  # no cooldown: nothing to remember
        fired = state.fires.get(self.name)
        last = None if fired is None else fired.get(key)
        if last is not None and ts - last < self._cooldown:
            return False
        if user is not None:
            had = user.refuses(state.profile, ts)
            if had is not None:  # filtered out: no fire recorded, so no cooldown starts
                return Refused(None if self._per is None else key, had)
        if fired is None:
            fired = state.fires[self.name] = {}
        if last is None or ts > last:
            if last is None and len(fired) >= self._max_keys:
                self._evict(fired, state.max_ts)
            fired[key] = ts
        return None if self._per is None else key

    def _evict(self, fired: dict[str, int], max_ts: int | None) -> None:
        """Drop expired keys, then the least recent down to 7/8 of the cap."""
        self._prune_keys(fired, max_ts)
        if len(fired) >= self._max_keys:
            keep = self._max_keys - max(1, self._max_keys // 8)
            for stale in sorted(fired, key=fired.__getitem__)[: len(fired) - keep]:
                del fired[stale]

    def _prune_keys(self, fired: dict[str, int], max_ts: int | None) -> None:
        if max_ts is None or self._cooldown is None:
            return
        horizon = max_ts - self._cooldown - self._late
        for key in [k for k, f in fired.items() if f <= horizon]:
            del fired[key]

    def prune(self, state: UserState) -> None:
        fired = state.fires.get(self.name)
        if fired is None:
            return
        self._prune_keys(fired, state.max_ts)
        if not fired:
            del state.fires[self.name]


def arrival_why(scene: ArrivalScene, trigger: Trigger) -> str:
    cool = (f", first within cooldown {format_duration_ms(scene.cooldown_ms)}"
            if scene.cooldown_ms else "")
    return f"{noun(scene.when, False)}{for_key(scene, trigger.key)}{cool}"


def explain_arrival(scene: ArrivalScene, events: Sequence[Event], fires: list[Trigger],
                    said: Said) -> SceneExplanation:
    when = scene.when.compile()
    fired_at = {(t.key, t.ts) for t in fires}
    refused: list[Refusal] = []
    matched = 0
    for event in events:
        has, key = per_value(scene, event)
        if not has or not when(event.fields):
            continue
        matched += 1
        if (key, event.ts) in fired_at:
            continue
        hot = cooling(scene, fires, key, event.ts)
        why = (f"cooldown {format_duration_ms(scene.cooldown_ms or 0)} since the fire at "
               f"{hm(hot.ts)}" if hot is not None else
               not_fired_reason(scene, said, event.ts))
        if len(refused) < MAX_REFUSALS:
            refused.append(Refusal(event.ts, key, why))
    fired = tuple(Fired(t, arrival_why(scene, t)) for t in fires)
    missing = None
    if not fires:
        missing = (f"no {noun(scene.when)}" if not matched else
                   f"{matched} {noun(scene.when)}, none fired: {refused[-1].why}")
    return SceneExplanation(scene.name, scene.kind, fired, tuple(refused), missing)


class ArrivalKind:
    name = "arrival"
    timer = False
    slot: Slot = "fires"
    reads_profile = False

    def rule(self, scene: ArrivalScene, limits: Limits) -> ArrivalRule:
        return ArrivalRule(scene, limits)

    def predicates(self, scene: ArrivalScene) -> tuple[Predicate | None, ...]:
        return scene.when, None

    def shape(self, scene: ArrivalScene) -> Shape:
        return Shape(scene.kind, scene.per)  # a changed `when` keeps the cooldowns

    def describe(self, scene: ArrivalScene) -> str:
        return "arrival" + qualifiers(scene.per, None, scene.cooldown_ms)


    def explain(self, scene: ArrivalScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return explain_arrival(scene, events, fires, said)

    def why(self, scene: ArrivalScene, trigger: Trigger, state: UserState | None) -> str:
        return arrival_why(scene, trigger)


KIND = ArrivalKind()
