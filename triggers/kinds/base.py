"""What every scene kind provides (:class:`SceneKind`) and the pieces kinds share.

A kind is one module of this package: its scene (the validated config of one
scene), its rule (the state transitions, in one class) and a
:class:`SceneKind` object that the registry (:mod:`triggers.kinds`) keys by
the config's ``kind`` name. The engine, hot reload, the hosts and
``check-config`` ask the kind; none of them tests a scene's class.

Per-user state has three slots (:class:`triggers.state.UserState`), keyed by
scene name, and a kind keeps its facts in one of them:

* ``windows``: per ``per`` value, two sorted timestamp lists and the newest
  fire (:class:`~triggers.state.KeyWindow`): ``repeat``, ``sequence``;
* ``fires``: per ``per`` value, the newest fire: ``arrival``;
* ``timer``: one armed deadline, fired by the engine's clock: ``absence``
  (a kind with ``timer=True``).

A kind that fits a slot needs no change to the state encoding. Its
:class:`Shape` names the predicates whose matches the slot records, which is
what a hot reload compares (:mod:`triggers.reshape`).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from triggers.budget import TriggerBudget
from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.kinds.explaining import Said, SceneExplanation
from triggers.predicates import Fields, Predicate, as_compared_string
from triggers.state import KeyWindow, UserState
from triggers.userfilter import Refused, UserFilter

NO_KEY = ""  # window key when a scene has no `per` (per values only occur with `per`)
Slot = Literal["windows", "fires", "timer"]

# A predicate as compared: (field, equals, sorted one_of, prefix) sorted by
# field, so the order its fields were written in does not matter.
Canon = tuple[tuple[str, str | None, tuple[str, ...] | None, str | None], ...]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one user can hold.

    ``late_ms``: events up to this much older than the user's newest event are
    evaluated exactly; older ones still apply but may see a pruned window.
    ``max_window_entries`` / ``max_keys``: caps against bots (newest kept).
    ``budget``: at most so many triggers per user (:mod:`triggers.budget`;
    None: no limit).
    """

    late_ms: int = 300_000
    max_window_entries: int = 64
    max_keys: int = 256
    budget: TriggerBudget | None = None


class Scene(Protocol):
    """One configured scene, of any kind (each kind's dataclass has these)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def user(self) -> UserFilter | None: ...


@dataclass(frozen=True, slots=True)
class Shape:
    """What a scene's stored state means: its kind, the field its keys are
    the values of, and the predicates whose matches its slot records, named
    by the slot's parts: ``when``/``unless`` the two timestamp lists of a
    ``windows`` slot, ``start`` what armed a ``timer``."""

    kind: str
    per: str | None = None
    when: Canon | None = None
    unless: Canon | None = None
    start: Canon | None = None


def canon(predicate: Predicate | None) -> Canon | None:
    if predicate is None:
        return None
    return tuple(sorted(
        (name, c.equals, tuple(sorted(c.one_of)) if c.one_of is not None else None, c.prefix)
        for name, c in predicate.conditions))


class Rule(Protocol):
    """A scene's transitions. ``apply`` takes an event (its fields and ts)
    and the results of the scene's two predicates when the engine already
    knows them from the event type (None: test the event).

    An event rule returns the trigger's key (None without ``per``) or False
    when nothing fires, :class:`~triggers.userfilter.Refused` when the
    scene's user filter refused the fire. A timer rule (``timer``) returns the deadline to
    (re)arm, None to disarm, or False; the engine keeps the timer."""

    name: str
    timer: bool
    user: UserFilter | None

    def apply(self, state: UserState, fields: Fields, ts: int, first: bool | None,
              second: bool | None) -> str | int | Refused | Literal[False] | None: ...

    def prune(self, state: UserState) -> None:
        """Drop expired entries (never a fact a result still needs)."""


S = TypeVar("S", contravariant=True)


class SceneKind(Protocol, Generic[S]):
    """A scene kind as the registry holds it."""

    name: str  # the config's `kind`
    timer: bool  # fires from the engine's clock (state in the `timer` slot)
    slot: Slot
    # Its rule reads the user's Profile (the engine then needs track_profile).
    reads_profile: bool

    def rule(self, scene: S, limits: Limits) -> Rule: ...

    def predicates(self, scene: S) -> tuple[Predicate | None, ...]:
        """Every predicate the rule tests (None: not configured), the two whose
        results ``Rule.apply`` takes first, in that order. The engine skips
        the rule for an event type none of them can match."""

    def shape(self, scene: S) -> Shape: ...

    def describe(self, scene: S) -> str:
        """One line for ``check-config``."""

    def explain(self, scene: S, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        """For ``explain``: ``fires`` (the scene's triggers for the user)
        each with its figures, the refusals, and what was missing when it did
        not fire, read off the user's ``events`` (taken, in input order) up to
        the final ``clock_ms``; ``said``: the engine's words for its refusals.
        :func:`triggers.kinds.explaining.plain` when the kind reads no story."""

    def why(self, scene: S, trigger: Trigger, state: UserState | None) -> str:
        """The rule and figures behind one fire (``explain``, the decision
        log); ``state``: the user's, just after the fire, when the caller has it."""


def qualifiers(per: str | None, unless: Predicate | None, cooldown_ms: int | None) -> str:
    """What ``describe`` adds after a kind's own words: `` per F``,
    `` unless ...`` and ``, cooldown D``, each when configured."""
    text = f" per {per}" if per else ""
    if unless:
        text += " unless ..."
    if cooldown_ms is not None:
        text += f", cooldown {format_duration_ms(cooldown_ms)}"
    return text


def key_of(per: str | None, fields: Fields) -> str | None:
    """The window key: NO_KEY without `per`; None when the event lacks the field."""
    if per is None:
        return NO_KEY
    return as_compared_string(fields.get(per))


def insert_capped(entries: list[int], ts: int, cap: int) -> None:
    if not entries or ts >= entries[-1]:
        entries.append(ts)
    else:
        insort(entries, ts)
    if len(entries) > cap:
        del entries[0]


def newest(win: KeyWindow) -> int:
    candidates = [win.when[-1] if win.when else None, win.unless[-1] if win.unless else None,
                  win.last_fire]
    return max((c for c in candidates if c is not None), default=-(1 << 63))


class WindowRule:
    """Pruning and key eviction of the ``windows`` slot, shared by its kinds.

    ``_keep``: how far behind the user's newest event the timestamps stay
    (``within`` plus the late allowance); ``_keep_fire``: the newest fire
    (the late allowance plus ``cooldown``)."""

    __slots__ = ("_cap", "_cooldown", "_keep", "_keep_fire", "_late", "_max_keys", "_within",
                 "name")

    def __init__(self, name: str, within_ms: int, cooldown_ms: int | None, cap: int,
                 limits: Limits) -> None:
        self.name = name
        self._within = within_ms
        self._cooldown = cooldown_ms
        self._late = limits.late_ms
        self._cap = cap
        self._max_keys = limits.max_keys
        self._keep = within_ms + limits.late_ms
        self._keep_fire = limits.late_ms + (cooldown_ms or 0)

    def _window(self, state: UserState, key: str) -> KeyWindow:
        """The key's window, pruned when something in it is old enough to go."""
        keys = state.windows.get(self.name)
        if keys is None:
            keys = state.windows[self.name] = {}
        win = keys.get(key)
        if win is None:  # a new window: nothing in it to prune
            if len(keys) >= self._max_keys:
                self._evict(keys, state)
            win = keys[key] = KeyWindow()
            return win
        max_ts = state.max_ts
        if max_ts is not None:
            horizon = max_ts - self._keep
            when, unless, last = win.when, win.unless, win.last_fire
            if ((when and when[0] <= horizon) or (unless and unless[0] <= horizon)
                    or (last is not None and last <= max_ts - self._keep_fire)):
                self._prune(win, max_ts)
        return win

    def _prune(self, win: KeyWindow, max_ts: int | None) -> None:
        if max_ts is None:
            return
        horizon = max_ts - self._within - self._late
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
            for stale in sorted(keys, key=lambda k: newest(keys[k]))[: len(keys) - keep]:
                del keys[stale]

    def prune(self, state: UserState) -> None:
        keys = state.windows.get(self.name)
        if not keys:
            return
        for key in list(keys):
            win = keys[key]
            self._prune(win, state.max_ts)
            if not win.when and not win.unless and win.last_fire is None:
                del keys[key]
        if not keys:
            del state.windows[self.name]
