"""``repeat``: at least ``count`` matching events within ``within``, none
matching ``unless`` (SEMANTICS.md, "Kinds")."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Literal

from triggers.durations import format_duration_ms
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


KIND = RepeatKind()
