"""Scene kinds and their state transitions: each kind's rules live here, in one place.

``repeat`` and ``arrival`` depend only on the user's own events; ``absence``
arms timers that the engine fires on its clock (see :mod:`triggers.engine`).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass, field
from typing import Literal

from triggers.predicates import Fields, Matcher, Predicate, as_compared_string
from triggers.state import KeyWindow, UserState
from triggers.userfilter import UserFilter

NO_KEY = ""  # window key when a scene has no `per` (per values only occur with `per`)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one user can hold.

    ``late_ms``: events up to this much older than the user's newest event are
    evaluated exactly; older ones still apply but may see a pruned window.
    ``max_window_entries`` / ``max_keys``: caps against bots (newest kept).
    """

    late_ms: int = 300_000
    max_window_entries: int = 64
    max_keys: int = 256


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


@dataclass(frozen=True, slots=True)
class AbsenceScene:
    name: str
    start: Predicate
    after_ms: int
    cancel: Predicate | None = None
    user: UserFilter | None = None
    kind: str = field(default="absence", init=False)


@dataclass(frozen=True, slots=True)
class ArrivalScene:
    name: str
    when: Predicate
    per: str | None = None
    cooldown_ms: int | None = None
    user: UserFilter | None = None
    kind: str = field(default="arrival", init=False)


Scene = RepeatScene | AbsenceScene | ArrivalScene


def _key_of(per: str | None, fields: Fields) -> str | None:
    """The window key: NO_KEY without `per`; None when the event lacks the field."""
    if per is None:
        return NO_KEY
    return as_compared_string(fields.get(per))


class RepeatRule:
    """`repeat`: at least `count` matching events in the window, none matching
    `unless`, no fire for this (user, key) within `cooldown`, and the user
    passes the scene's `user` filter (else: no fire, no cooldown started)."""

    __slots__ = ("_cap", "_cooldown", "_count", "_keep", "_keep_fire", "_late", "_max_keys",
                 "_per", "_unless", "_user", "_when", "_within", "name")

    def __init__(self, scene: RepeatScene, limits: Limits) -> None:
        self.name = scene.name
        self._when: Matcher = scene.when.compile()
        self._unless: Matcher | None = scene.unless.compile() if scene.unless else None
        self._per = scene.per
        self._count = scene.count
        self._within = scene.within_ms
        self._cooldown = scene.cooldown_ms
        self._user = scene.user
        self._late = limits.late_ms
        self._cap = max(limits.max_window_entries, scene.count)
        self._max_keys = limits.max_keys
        # How far behind the user's newest event entries / the last fire stay
        # (the bounds _prune uses, folded once).
        self._keep = self._within + self._late
        self._keep_fire = self._late + (self._cooldown or 0)

    def apply(
        self, state: UserState, fields: Fields, ts: int, when_holds: bool | None = None,
        unless_holds: bool | None = None,
    ) -> str | Literal[False] | None:
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
        keys = state.repeat.get(self.name)
        if keys is None:
            keys = state.repeat[self.name] = {}
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
            _insert_capped(unless, ts, self._cap)
        if not is_when:
            return False
        if not when or ts >= when[-1]:
            when.append(ts)
            if len(when) > self._cap:
                del when[0]
            newer = len(when)
        else:
            _insert_capped(when, ts, self._cap)
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
        if self._user is not None and not self._user.admits(state.profile, ts):
            return False  # filtered out: as if it had not qualified (no cooldown)
        if last is None or ts > last:
            win.last_fire = ts
        return None if self._per is None else key  # "" is a real per value

    def _horizon(self, max_ts: int | None) -> int | None:
        return None if max_ts is None else max_ts - self._within - self._late

    def _prune(self, win: KeyWindow, max_ts: int | None) -> None:
        horizon = self._horizon(max_ts)
        if horizon is None:
            return
        for entries in (win.when, win.unless):
            if entries and entries[0] <= horizon:
                del entries[: bisect_right(entries, horizon)]
        cooldown = self._cooldown or 0
        if win.last_fire is not None and win.last_fire <= horizon + self._within - cooldown:
            win.last_fire = None

    def _evict(self, keys: dict[str, KeyWindow], state: UserState) -> None:
        """Make room for a new key: drop expired keys, then the least recent
        ones, down to 7/8 of the cap so a bot pays this scan once per many keys."""
        for key in list(keys):
            win = keys[key]
            self._prune(win, state.max_ts)
            if not win.when and not win.unless and win.last_fire is None:
                del keys[key]
        if len(keys) >= self._max_keys:
            keep = self._max_keys - max(1, self._max_keys // 8)
            for stale in sorted(keys, key=lambda k: _newest(keys[k]))[: len(keys) - keep]:
                del keys[stale]

    def prune(self, state: UserState) -> None:
        keys = state.repeat.get(self.name)
        if not keys:
            return
        for key in list(keys):
            win = keys[key]
            self._prune(win, state.max_ts)
            if not win.when and not win.unless and win.last_fire is None:
                del keys[key]
        if not keys:
            del state.repeat[self.name]


class ArrivalRule:
    """`arrival`: fire on every matching event unless fired for (user, key)
    within `cooldown` or the user fails the scene's `user` filter."""

    __slots__ = ("_cooldown", "_late", "_max_keys", "_per", "_user", "_when", "name")

    def __init__(self, scene: ArrivalScene, limits: Limits) -> None:
        self.name = scene.name
        self._when = scene.when.compile()
        self._per = scene.per
        self._cooldown = scene.cooldown_ms
        self._user = scene.user
        self._late = limits.late_ms
        self._max_keys = limits.max_keys

    def apply(
        self, state: UserState, fields: Fields, ts: int, when_holds: bool | None = None,
        _unused: bool | None = None,
    ) -> str | Literal[False] | None:
        if not (self._when(fields) if when_holds is None else when_holds):
            return False
        key = _key_of(self._per, fields)
        if key is None:
            return False
        user = self._user
        if self._cooldown is None:
            if user is not None and not user.admits(state.profile, ts):
                return False
            return None if self._per is None else key  # no cooldown: nothing to remember
        fired = state.arrival.get(self.name)
        last = None if fired is None else fired.get(key)
        if last is not None and ts - last < self._cooldown:
            return False
        if user is not None and not user.admits(state.profile, ts):
            return False  # filtered out: no fire recorded, so no cooldown starts
        if fired is None:
            fired = state.arrival[self.name] = {}
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
        fired = state.arrival.get(self.name)
        if fired is None:
            return
        self._prune_keys(fired, state.max_ts)
        if not fired:
            del state.arrival[self.name]


def _insert_capped(entries: list[int], ts: int, cap: int) -> None:
    if not entries or ts >= entries[-1]:
        entries.append(ts)
    else:
        insort(entries, ts)
    if len(entries) > cap:
        del entries[0]


def _newest(win: KeyWindow) -> int:
    candidates = [win.when[-1] if win.when else None, win.unless[-1] if win.unless else None,
                  win.last_fire]
    return max((c for c in candidates if c is not None), default=-(1 << 63))
