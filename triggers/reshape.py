"""Hot reload and user state: which parts of a scene's state a new config
invalidates (state is keyed by scene name, so a scene that changes shape
under the same name would otherwise read state of the old shape).

The rule (docs/architecture.md, "Config"): state is kept as long as the facts
it records still mean the same thing under the new scene.

* scene removed, or its ``kind`` changed: everything under its name goes;
* ``per`` changed (``repeat``, ``arrival``): everything goes (windows and
  cooldowns are keyed by the old field's values);
* ``repeat`` ``when`` changed: the ``when`` timestamps go (they matched the
  old predicate); ``unless`` changed: the ``unless`` timestamps go; the
  newest fire per key stays (the scene did fire then: cooldowns hold);
* ``absence`` ``start`` changed: armed timers go (the old start armed them);
* anything else (``count``, ``within``, ``cooldown``, ``after``, ``cancel``,
  ``arrival``'s ``when``, the ``user`` filter) keeps the state: those are read
  when deciding, and the state holds facts that are still true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from triggers.predicates import Predicate
from triggers.scenes import AbsenceScene, ArrivalScene, RepeatScene, Scene
from triggers.state import UserState


@dataclass(frozen=True, slots=True)
class Reset:
    """What to drop of one scene's state in every user."""

    everything: bool = False
    when: bool = False  # repeat: when timestamps
    unless: bool = False  # repeat: unless timestamps
    timer: bool = False  # absence: the armed timer


def _same(a: Predicate | None, b: Predicate | None) -> bool:
    """Equal predicates, whatever the order their fields were written in."""
    if a is None or b is None:
        return a is b
    return sorted(a.conditions, key=lambda c: c[0]) == sorted(b.conditions, key=lambda c: c[0])


def _reset(old: Scene, new: Scene | None) -> Reset | None:
    if new is None or new.kind != old.kind:
        return Reset(everything=True)
    if isinstance(old, RepeatScene) and isinstance(new, RepeatScene):
        if old.per != new.per:
            return Reset(everything=True)
        when, unless = not _same(old.when, new.when), not _same(old.unless, new.unless)
        return Reset(when=when, unless=unless) if when or unless else None
    if isinstance(old, ArrivalScene) and isinstance(new, ArrivalScene):
        return Reset(everything=True) if old.per != new.per else None
    if isinstance(old, AbsenceScene) and isinstance(new, AbsenceScene):
        return None if _same(old.start, new.start) else Reset(timer=True)
    return None  # pragma: no cover - kinds are equal and exhaustive above


def resets(old: Sequence[Scene], new: Sequence[Scene]) -> dict[str, Reset]:
    """Per scene name of ``old``, what a change to ``new`` invalidates."""
    by_name = {s.name: s for s in new}
    out = {}
    for scene in old:
        reset = _reset(scene, by_name.get(scene.name))
        if reset is not None:
            out[scene.name] = reset
    return out


def apply_resets(state: UserState, plan: Mapping[str, Reset]) -> bool:
    """Drop what ``plan`` says from one user's state; True if anything went."""
    changed = False
    for name, reset in plan.items():
        if reset.everything or reset.timer:
            changed |= state.absence.pop(name, None) is not None
        if reset.everything:
            changed |= bool(state.repeat.pop(name, None))
            changed |= bool(state.arrival.pop(name, None))
            continue
        windows = state.repeat.get(name)
        if windows and (reset.when or reset.unless):
            for window in windows.values():
                if reset.when and window.when:
                    window.when = []
                    changed = True
                if reset.unless and window.unless:
                    window.unless = []
                    changed = True
    return changed
