"""``repeat``: at least ``count`` matching events within ``within``, none
matching ``unless`` (SEMANTICS.md, "Kinds")."""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.kinds.base import (
    NO_KEY,
    Limits,
    Shape,
    Slot,
    WindowRule,
    canon,
    insert_capped,
    qualifiers,
)
from triggers.kinds.explaining import (
    MAX_REFUSALS,
    Fired,
    Refusal,
    Said,
    SceneExplanation,
    a_noun,
    cooling,
    for_key,
    hm,
    not_fired_reason,
    noun,
    per_value,
)
from triggers.predicates import Fields, Matcher, Predicate, as_compared_string
from triggers.state import KeyWindow, UserState
from triggers.userfilter import Refused, UserFilter


@dataclass(frozen=True, slots=True)
class RepeatScene:
    name: str
    when: Predicate
    count: int
    within_ms: int
    per: str | None = None
    unless: Predicate | None = None
    cooldown_ms: int | None = None
    user: UserFilter | None = None
    kind: str = field(default="repeat", init=False)


class RepeatRule(WindowRule):
    """`repeat`: at least `count` matching events in the window, none matching
    `unless`, no fire for this (user, key) within `cooldown`, and the user
    passes the scene's `user` filter (else: no fire, no cooldown started)."""

    __slots__ = ("_count", "_per", "_unless", "_when", "timer", "user")

    def __init__(self, scene: RepeatScene, limits: Limits) -> None:
        super().__init__(scene.name, scene.within_ms, scene.cooldown_ms,
                         max(limits.max_window_entries, scene.count), limits)
        self.timer = False
        self.user = scene.user
        self._when: Matcher = scene.when.compile()
        self._unless: Matcher | None = scene.unless.compile() if scene.unless else None
        self._per = scene.per
        self._count = scene.count

    def apply(
        self, state: UserState, fields: Fields, ts: int, when_holds: bool | None = None,
        unless_holds: bool | None = None,
    ) -> str | Refused | Literal[False] | None:
        """Update the state for an event (its fields and ts); return the
        trigger's key (None without `per`) or False when nothing fires.
        ``*_holds`` are the predicates' results when the caller already knows
        them (from the event type alone)."""
        is_when = self._when(fields) if when_holds is None else when_holds
        if unless_holds is None:
            is_unless = self._unless is not None and self._unless(fields)
        else:
            is_unless = unless_holds
        if not (is_when or is_unless):
            return False
        per = self._per
        if per is None:
            key = NO_KEY
        else:
            value = fields.get(per)
            if type(value) is str:
                key = value
            else:
                text = as_compared_string(value)
                if text is None:
                    return False  # no `per` field: this scene ignores the event
                key = text
        # The window fetch of WindowRule._window, inlined: this is the hot path.
        keys = state.windows.get(self.name)
        if keys is None:
            keys = state.windows[self.name] = {}
        win = keys.get(key)
        if win is None:  # a new window: nothing in it to prune
            if len(keys) >= self._max_keys:
                self._evict(keys, state)
            win = keys[key] = KeyWindow()
            when = win.when
            unless = win.unless
        else:
            when = win.when
            unless = win.unless
            max_ts = state.max_ts
            if max_ts is not None:  # prune only when something is old enough to go
                horizon = max_ts - self._keep
                last = win.last_fire
                if ((when and when[0] <= horizon) or (unless and unless[0] <= horizon)
                        or (last is not None and last <= max_ts - self._keep_fire)):
                    self._prune(win, max_ts)
        if is_unless:
            insert_capped(unless, ts, self._cap)
        if not is_when:
            return False
        if not when or ts >= when[-1]:
            when.append(ts)
            if len(when) > self._cap:
                del when[0]
            newer = len(when)
        else:
            insert_capped(when, ts, self._cap)
            newer = bisect_right(when, ts)
        if newer < self._count:  # too few events at all: no need to bisect
            return False
        low = ts - self._within
        if newer - bisect_right(when, low) < self._count:
            return False
        if unless:
            idx = bisect_right(unless, ts)
            if idx and unless[idx - 1] > low:
                return False
        last = win.last_fire
        if self._cooldown is not None and last is not None and ts - last < self._cooldown:
            return False
        if self.user is not None:
            had = self.user.refuses(state.profile, ts)
            if had is not None:  # filtered out: as if it had not qualified (no cooldown)
                return Refused(None if self._per is None else key, had)
        if last is None or ts > last:
            win.last_fire = ts
        return None if self._per is None else key  # "" is a real per value


def repeat_why(scene: RepeatScene, trigger: Trigger) -> str:
    """``3 of 3 views of product_id 1002544 within 30m, no purchase``."""
    return (f"{scene.count} of {scene.count} {noun(scene.when)}{for_key(scene, trigger.key)} "
            f"within {format_duration_ms(scene.within_ms)}"
            + (f", no {noun(scene.unless, False)}" if scene.unless else ""))


def explain_repeat(scene: RepeatScene, events: Sequence[Event], fires: list[Trigger],
                   said: Said) -> SceneExplanation:
    """Each window that qualified and why it did not fire; else the fullest window."""
    when, unless = scene.when.compile(), scene.unless.compile() if scene.unless else None
    within = format_duration_ms(scene.within_ms)
    what = noun(scene.when)
    fired_at = {(t.key, t.ts) for t in fires}
    refused: list[Refusal] = []
    more = 0
    best: tuple[int, int, str | None, int | None] | None = None  # n, ts, key, last blocker
    # Per key, the sorted times of the `when` and `unless` events taken so far:
    # a window is two bisects (a bot's 10k views of one product stay cheap).
    seen: dict[str | None, tuple[list[int], list[int]]] = {}
    for event in events:
        has, key = per_value(scene, event)
        if not has:
            continue
        is_when = when(event.fields)
        whens, unlesses = seen.setdefault(key, ([], []))
        if is_when:
            insort(whens, event.ts)
        if unless is not None and unless(event.fields):
            insort(unlesses, event.ts)
        if not is_when:
            continue
        low = event.ts - scene.within_ms
        n = bisect_right(whens, event.ts) - bisect_right(whens, low)
        inside = bisect_right(unlesses, event.ts)
        blocker = unlesses[inside - 1] if inside and unlesses[inside - 1] > low else None
        figures = f"{min(n, scene.count)} of {scene.count} {what}{for_key(scene, key)} " \
                  f"within {within}"
        if (key, event.ts) in fired_at:
            continue
        if n >= scene.count and blocker is None:
            hot = cooling(scene, fires, key, event.ts)
            why = (f"cooldown {format_duration_ms(scene.cooldown_ms or 0)} since the fire at "
                   f"{hm(hot.ts)}" if hot is not None else
                   not_fired_reason(scene, said, event.ts))
            if len(refused) < MAX_REFUSALS:
                refused.append(Refusal(event.ts, key, f"{figures}; {why}"))
            else:
                more += 1
        rank = (min(n, scene.count), event.ts)
        if best is None or rank >= best[:2]:
            best = (*rank, key, blocker)
    fired = tuple(Fired(t, repeat_why(scene, t)) for t in fires)
    missing = None
    if not fires:
        if best is None:
            missing = f"no {what}" + ("" if scene.per is None else f" with {scene.per}")
        else:
            n, _ts, key, last_blocker = best
            missing = f"{n} of {scene.count} {what}{for_key(scene, key)} within {within}"
            if last_blocker is not None:
                missing += f"; {a_noun(scene.unless)} at {hm(last_blocker)} blocks it"
            elif n >= scene.count and refused:
                missing += f"; {refused[-1].why.rpartition('; ')[2]}"
    return SceneExplanation(scene.name, scene.kind, fired, tuple(refused), missing,
                            {"refusals_not_listed": more} if more else {})


class RepeatKind:
    name = "repeat"
    timer = False
    slot: Slot = "windows"
    reads_profile = False

    def rule(self, scene: RepeatScene, limits: Limits) -> RepeatRule:
        return RepeatRule(scene, limits)

    def predicates(self, scene: RepeatScene) -> tuple[Predicate | None, ...]:
        return scene.when, scene.unless

    def shape(self, scene: RepeatScene) -> Shape:
        return Shape(scene.kind, scene.per, canon(scene.when), canon(scene.unless))

    def describe(self, scene: RepeatScene) -> str:
        return (f"repeat  {scene.count}x within {format_duration_ms(scene.within_ms)}"
                + qualifiers(scene.per, scene.unless, scene.cooldown_ms))


    def explain(self, scene: RepeatScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return explain_repeat(scene, events, fires, said)

    def why(self, scene: RepeatScene, trigger: Trigger, state: UserState | None) -> str:
        return repeat_why(scene, trigger)


KIND = RepeatKind()
