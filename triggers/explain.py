"""Why a scene fired for a user, or what was missing: read off the user's own
taken events and the triggers the engine fired, with the scene's numbers.

Pure like the engine: the user's events (in input order), the scene, the
triggers the engine fired for this user and the final clock in; sentences and
figures out. It restates SEMANTICS.md for one user (windows, ``unless``,
cooldowns, absence timers) and names what decided; where the engine fired
nothing although the window qualified, the scene's ``user:`` filter refused
(the only other reason), or, without a filter, the engine's state limits
dropped entries (``engine:``, docs/architecture.md).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.predicates import Predicate, as_compared_string
from triggers.scenes import (
    AbsenceScene,
    ArrivalScene,
    RepeatScene,
    ReplenishmentScene,
    Scene,
    SequenceScene,
)
from triggers.state import UserState

MAX_REFUSALS = 50  # listed per scene; the rest are counted


@dataclass(frozen=True, slots=True)
class Fired:
    trigger: Trigger
    why: str  # the scene's rule and its figures


@dataclass(frozen=True, slots=True)
class Refusal:
    ts: int
    key: str | None
    why: str  # e.g. the user filter refused, a cooldown, unless


@dataclass(frozen=True, slots=True)
class SceneExplanation:
    scene: str
    kind: str
    fired: tuple[Fired, ...] = ()
    refused: tuple[Refusal, ...] = ()
    missing: str | None = None  # for a scene that did not fire: what was missing
    extra: dict[str, object] = field(default_factory=dict)

    def lines(self, user_id: str) -> list[str]:
        out = [f"{self.scene} fired at {clock(f.trigger.ts)}: {f.why}" for f in self.fired]
        out += [f"{self.scene} refused at {clock(r.ts)}"
                f"{'' if r.key is None else f' ({r.key})'}: {r.why}" for r in self.refused]
        if self.missing is not None:
            out.append(f"{self.scene} for {user_id}: {self.missing}")
        return out


def clock(ts_ms: int) -> str:
    """Event time as the operator reads it (UTC, the events' zone)."""
    try:
        return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return f"{ts_ms}ms"


def hm(ts_ms: int) -> str:
    try:
        return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%H:%M")
    except (ValueError, OverflowError, OSError):
        return f"{ts_ms}ms"


def describe(predicate: Predicate | None) -> str:
    """``type=view``, ``page^=/promo``, ``type in {cart,view}``; empty: any event."""
    if predicate is None or predicate.matches_all:
        return "any event"
    parts = []
    for name, cond in predicate.conditions:
        if cond.equals is not None:
            parts.append(f"{name}={cond.equals}")
        if cond.one_of is not None:
            parts.append(f"{name} in {{{','.join(sorted(cond.one_of))}}}")
        if cond.prefix is not None:
            parts.append(f"{name}^={cond.prefix}")
    return " and ".join(parts)


def noun(predicate: Predicate | None, plural: bool = True) -> str:
    """``views`` for ``{type: view}``, else the predicate in brackets."""
    if predicate is not None and len(predicate.conditions) == 1:
        name, cond = predicate.conditions[0]
        if name == "type" and cond.equals is not None and not cond.one_of and not cond.prefix:
            return cond.equals + ("s" if plural else "")
    return f"events ({describe(predicate)})" if plural else f"event ({describe(predicate)})"


def fired_why(scene: Scene, trigger: Trigger, state: UserState | None = None) -> str:
    """The scene's rule and figures behind one of its triggers, as explain
    prints them: ``3 of 3 views of product_id 1002544 within 30m, no
    purchase``. A fire fixes the figures of repeat, arrival and absence; a
    sequence's start is read from the user's state just after the fire
    (the worker has it), else it is left out."""
    key = trigger.key
    if isinstance(scene, RepeatScene):
        return (f"{scene.count} of {scene.count} {noun(scene.when)}{_for_key(scene, key)} "
                f"within {format_duration_ms(scene.within_ms)}"
                + (f", no {noun(scene.unless, False)}" if scene.unless else ""))
    if isinstance(scene, ArrivalScene):
        cool = (f", first within cooldown {format_duration_ms(scene.cooldown_ms)}"
                if scene.cooldown_ms else "")
        return f"{noun(scene.when, False)}{_for_key(scene, key)}{cool}"
    if isinstance(scene, AbsenceScene):
        return (f"{noun(scene.start, False)} at {hm(trigger.ts - scene.after_ms)}, no "
                f"{noun(scene.cancel, False)} within {format_duration_ms(scene.after_ms)}")
    if isinstance(scene, SequenceScene):
        one, two = noun(scene.first, False), noun(scene.then, False)
        within = format_duration_ms(scene.within_ms)
        win = None if state is None else state.windows.get(scene.name, {}).get(key or "")
        idx = -1 if win is None else bisect_left(win.when, trigger.ts) - 1
        if win is None or idx < 0:
            return f"{one} then {two} within {within}"
        return f"{one} at {hm(win.when[idx])}, then {two} within {within}"
    if isinstance(scene, ReplenishmentScene):
        of = f" of {scene.category}" if scene.category is not None else ""
        return (f"no purchase{of} by {hm(trigger.ts)}: the expected next purchase "
                f"(newest + mean interval) plus {format_duration_ms(scene.margin_ms)}")
    return f"{scene.kind} fired"


# Per scene, per time: the engine's own words for a user-filter refusal
# (triggers.events.Refusal.text(), or the worker's decision record of it).
Said = Mapping[tuple[str, int], str]
_NOTHING_SAID: Said = {}


def explain_scene(scene: Scene, events: Sequence[Event], fired: Iterable[Trigger],
                  clock_ms: int | None, said: Said = _NOTHING_SAID) -> SceneExplanation:
    """``events``: the user's taken events in input order; ``fired``: the
    engine's triggers of this scene for the user; ``clock_ms``: the final clock."""
    mine = [t for t in fired if t.scene == scene.name]
    if isinstance(scene, RepeatScene):
        return _repeat(scene, events, mine, said)
    if isinstance(scene, ArrivalScene):
        return _arrival(scene, events, mine, said)
    if isinstance(scene, AbsenceScene):
        return _absence(scene, events, mine, clock_ms, said)
    if isinstance(scene, SequenceScene):
        return _sequence(scene, events, mine, said)
    plain = tuple(Fired(t, f"{scene.kind} fired") for t in mine)  # a kind explain cannot read
    return SceneExplanation(scene.name, scene.kind, plain, (), None if mine else
                            f"did not fire (no explanation for kind {scene.kind!r} yet)")


def _sequence(scene: SequenceScene, events: Sequence[Event], fires: list[Trigger],
              said: Said) -> SceneExplanation:
    first, then = scene.first.compile(), scene.then.compile()
    unless = scene.unless.compile() if scene.unless else None
    within = format_duration_ms(scene.within_ms)
    one, two = noun(scene.first, False), noun(scene.then, False)
    whys = {}
    story = f"no {noun(scene.first)}"
    for i, event in enumerate(events):
        has, key = _per_value(scene, event)
        if not has:
            continue
        same = [e for e in events[:i] if scene.per is None or _per_value(scene, e)[1] == key]
        if then(event.fields):
            starts = [e for e in same if first(e.fields)
                      and event.ts - scene.within_ms < e.ts <= event.ts]
            if starts:
                blockers = [e for e in same if unless is not None and unless(e.fields)
                            and starts[-1].ts <= e.ts <= event.ts]
                whys[(key, event.ts)] = f"{one} at {hm(starts[-1].ts)}, then {two} within {within}"
                story = (f"a {noun(scene.unless, False)} at {hm(blockers[-1].ts)} blocks it"
                         if blockers else f"{one} at {hm(starts[-1].ts)} then {two} at "
                                          f"{hm(event.ts)}: {_not_fired_reason(scene, said, event.ts)}")
        elif first(event.fields):
            story = f"a {one} at {hm(event.ts)}, no {two} within {within} after it"
    fired = tuple(Fired(t, whys.get((t.key, t.ts), f"{one} then {two} within {within}"))
                  for t in fires)
    return SceneExplanation(scene.name, scene.kind, fired, (), None if fires else story)


def _per_value(scene: RepeatScene | ArrivalScene | SequenceScene,
               event: Event) -> tuple[bool, str | None]:
    if scene.per is None:
        return True, None
    value = as_compared_string(event.fields.get(scene.per))
    return value is not None, value


def _for_key(scene: RepeatScene | ArrivalScene, key: str | None) -> str:
    return "" if scene.per is None else f" of {scene.per} {key}"


def _cooling(scene: RepeatScene | ArrivalScene, fires: list[Trigger], key: str | None,
             ts: int) -> Trigger | None:
    if scene.cooldown_ms is None:
        return None
    hot = [f for f in fires if f.key == key and f.ts <= ts and ts - f.ts < scene.cooldown_ms]
    return hot[-1] if hot else None


def _not_fired_reason(scene: RepeatScene | ArrivalScene | SequenceScene | AbsenceScene,
                      said: Said, ts: int) -> str:
    engine = said.get((scene.name, ts))
    if engine is not None:
        return engine
    if scene.user is not None:
        return "the scene's user filter refused this user"
    return "the window's entries were pruned (engine limits)"


def _repeat(scene: RepeatScene, events: Sequence[Event], fires: list[Trigger], said: Said
            ) -> SceneExplanation:
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
        has, key = _per_value(scene, event)
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
        figures = f"{min(n, scene.count)} of {scene.count} {what}{_for_key(scene, key)} " \
                  f"within {within}"
        if (key, event.ts) in fired_at:
            continue
        if n >= scene.count and blocker is None:
            hot = _cooling(scene, fires, key, event.ts)
            why = (f"cooldown {format_duration_ms(scene.cooldown_ms or 0)} since the fire at "
                   f"{hm(hot.ts)}" if hot is not None else
                   _not_fired_reason(scene, said, event.ts))
            if len(refused) < MAX_REFUSALS:
                refused.append(Refusal(event.ts, key, f"{figures}; {why}"))
            else:
                more += 1
        rank = (min(n, scene.count), event.ts)
        if best is None or rank >= best[:2]:
            best = (*rank, key, blocker)
    fired = tuple(Fired(t, fired_why(scene, t)) for t in fires)
    missing = None
    if not fires:
        if best is None:
            missing = f"no {what}" + ("" if scene.per is None else f" with {scene.per}")
        else:
            n, _ts, key, last_blocker = best
            missing = f"{n} of {scene.count} {what}{_for_key(scene, key)} within {within}"
            if last_blocker is not None:
                missing += f"; a {noun(scene.unless, False)} at {hm(last_blocker)} blocks it"
            elif n >= scene.count and refused:
                missing += f"; {refused[-1].why.rpartition('; ')[2]}"
    return SceneExplanation(scene.name, scene.kind, fired, tuple(refused), missing,
                            {"refusals_not_listed": more} if more else {})


def _arrival(scene: ArrivalScene, events: Sequence[Event], fires: list[Trigger], said: Said
             ) -> SceneExplanation:
    when = scene.when.compile()
    fired_at = {(t.key, t.ts) for t in fires}
    refused: list[Refusal] = []
    matched = 0
    for event in events:
        has, key = _per_value(scene, event)
        if not has or not when(event.fields):
            continue
        matched += 1
        if (key, event.ts) in fired_at:
            continue
        hot = _cooling(scene, fires, key, event.ts)
        why = (f"cooldown {format_duration_ms(scene.cooldown_ms or 0)} since the fire at "
               f"{hm(hot.ts)}" if hot is not None else
               _not_fired_reason(scene, said, event.ts))
        if len(refused) < MAX_REFUSALS:
            refused.append(Refusal(event.ts, key, why))
    fired = tuple(Fired(t, fired_why(scene, t)) for t in fires)
    missing = None
    if not fires:
        missing = (f"no {noun(scene.when)}" if not matched else
                   f"{matched} {noun(scene.when)}, none fired: {refused[-1].why}")
    return SceneExplanation(scene.name, scene.kind, fired, tuple(refused), missing)


def _absence(scene: AbsenceScene, events: Sequence[Event], fires: list[Trigger],
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
                         f"a {noun(scene.cancel, False)} at {hm(event.ts)}")
            armed = None
        elif start(event.fields):
            if armed is not None:
                story = f"re-armed by the {noun(scene.start, False)} at {hm(event.ts)}"
            armed = event
    settle(None)
    fired = tuple(Fired(t, fired_why(scene, t)) for t in fires)
    missing = None
    if not fires:
        missing = story or f"no {noun(scene.start)}"
    return SceneExplanation(scene.name, scene.kind, fired, tuple(refused), missing)
