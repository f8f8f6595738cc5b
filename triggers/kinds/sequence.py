"""``sequence``: an event matching ``first``, then one matching ``then``
within ``within``, with no event matching ``unless`` in between
(docs/semantics-notes.md, "The sequence kind").

State: the ``windows`` slot, as ``repeat`` keeps it: per ``per`` value the
sorted times of ``first`` events (the window's ``when`` list), of ``unless``
events and the newest fire. So a hot reload drops the ``first`` times when
``first`` changes and the ``unless`` times when ``unless`` changes; a changed
``then`` keeps both (it is read when deciding).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.kinds.base import (
    Limits,
    Shape,
    Slot,
    WindowRule,
    canon,
    insert_capped,
    key_of,
    qualifiers,
)
from triggers.kinds.explaining import (
    Fired,
    Said,
    SceneExplanation,
    a_noun,
    hm,
    not_fired_reason,
    noun,
    per_value,
)
from triggers.predicates import Fields, Matcher, Predicate
from triggers.state import UserState
from triggers.userfilter import Refused, UserFilter


@dataclass(frozen=True, slots=True)
class SequenceScene:
    name: str
    first: Predicate
    then: Predicate
    within_ms: int
    per: str | None = None
    unless: Predicate | None = None
    cooldown_ms: int | None = None
    user: UserFilter | None = None
    kind: str = field(default="sequence", init=False)


class SequenceRule(WindowRule):
    """On an event ``e`` matching ``then``: fire when the latest ``first``
    time ``a`` with ``e.ts - within < a < e.ts`` has no ``unless`` time in
    ``[a, e.ts]`` (the latest one is the best candidate: no earlier one can
    have fewer ``unless`` events after it), the cooldown allows and the user
    passes the filter. ``e`` is recorded first: as ``unless`` it blocks
    itself; as ``first`` it can only start a later sequence."""

    __slots__ = ("_first", "_per", "_then", "_unless", "timer", "user")

    def __init__(self, scene: SequenceScene, limits: Limits) -> None:
        super().__init__(scene.name, scene.within_ms, scene.cooldown_ms,
                         limits.max_window_entries, limits)
        self.timer = False
        self.user = scene.user
        self._first: Matcher = scene.first.compile()
        self._then: Matcher = scene.then.compile()
        self._unless: Matcher | None = scene.unless.compile() if scene.unless else None
        self._per = scene.per

    def apply(self, state: UserState, fields: Fields, ts: int, first_holds: bool | None,
              unless_holds: bool | None) -> str | Refused | Literal[False] | None:
        is_first = self._first(fields) if first_holds is None else first_holds
        if unless_holds is None:
            is_unless = self._unless is not None and self._unless(fields)
        else:
            is_unless = unless_holds
        is_then = self._then(fields)
        if not (is_first or is_unless or is_then):
            return False
        key = key_of(self._per, fields)
        if key is None:
            return False  # no `per` field: this scene ignores the event
        win = self._window(state, key)
        if is_first:
            insert_capped(win.when, ts, self._cap)
        if is_unless:
            insert_capped(win.unless, ts, self._cap)
        if not is_then:
            return False
        firsts = win.when
        idx = bisect_left(firsts, ts) - 1  # the latest first strictly before ts
        if idx < 0 or firsts[idx] <= ts - self._within:
            return False
        unless = win.unless
        if unless:
            later = bisect_left(unless, firsts[idx])
            if later < len(unless) and unless[later] <= ts:
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
        return None if self._per is None else key


def sequence_why(scene: SequenceScene, trigger: Trigger, state: UserState | None) -> str:
    """The start is read from the user's state just after the fire (the
    worker has it), else left out."""
    one, two = noun(scene.first, False), noun(scene.then, False)
    within = format_duration_ms(scene.within_ms)
    win = None if state is None else state.windows.get(scene.name, {}).get(trigger.key or "")
    idx = -1 if win is None else bisect_left(win.when, trigger.ts) - 1
    if win is None or idx < 0:
        return f"{one} then {two} within {within}"
    return f"{one} at {hm(win.when[idx])}, then {two} within {within}"


def explain_sequence(scene: SequenceScene, events: Sequence[Event], fires: list[Trigger],
                     said: Said) -> SceneExplanation:
    first, then = scene.first.compile(), scene.then.compile()
    unless = scene.unless.compile() if scene.unless else None
    within = format_duration_ms(scene.within_ms)
    one, two = noun(scene.first, False), noun(scene.then, False)
    whys = {}
    story = f"no {noun(scene.first)}"
    for i, event in enumerate(events):
        has, key = per_value(scene, event)
        if not has:
            continue
        same = [e for e in events[:i] if scene.per is None or per_value(scene, e)[1] == key]
        if then(event.fields):
            # Strictly earlier, as the rule: the same millisecond is no order.
            starts = [e for e in same if first(e.fields)
                      and event.ts - scene.within_ms < e.ts < event.ts]
            if starts:
                blockers = [e for e in same if unless is not None and unless(e.fields)
                            and starts[-1].ts <= e.ts <= event.ts]
                whys[(key, event.ts)] = f"{one} at {hm(starts[-1].ts)}, then {two} within {within}"
                story = (f"{a_noun(scene.unless)} at {hm(blockers[-1].ts)} blocks it"
                         if blockers else f"{one} at {hm(starts[-1].ts)} then {two} at "
                                          f"{hm(event.ts)}: {not_fired_reason(scene, said, event.ts)}")
        elif first(event.fields):
            story = f"{a_noun(scene.first)} at {hm(event.ts)}, no {two} within {within} after it"
    fired = tuple(Fired(t, whys.get((t.key, t.ts), f"{one} then {two} within {within}"))
                  for t in fires)
    return SceneExplanation(scene.name, scene.kind, fired, (), None if fires else story)


class SequenceKind:
    name = "sequence"
    timer = False
    slot: Slot = "windows"
    reads_profile = False

    def rule(self, scene: SequenceScene, limits: Limits) -> SequenceRule:
        return SequenceRule(scene, limits)

    def predicates(self, scene: SequenceScene) -> tuple[Predicate | None, ...]:
        # apply takes the results of the two that record state; it tests `then`
        return scene.first, scene.unless, scene.then

    def shape(self, scene: SequenceScene) -> Shape:
        return Shape(scene.kind, scene.per, canon(scene.first), canon(scene.unless))

    def describe(self, scene: SequenceScene) -> str:
        return (f"sequence first ... then ... within {format_duration_ms(scene.within_ms)}"
                + qualifiers(scene.per, scene.unless, scene.cooldown_ms))


    def explain(self, scene: SequenceScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return explain_sequence(scene, events, fires, said)

    def why(self, scene: SequenceScene, trigger: Trigger, state: UserState | None) -> str:
        return sequence_why(scene, trigger, state)


KIND = SequenceKind()
