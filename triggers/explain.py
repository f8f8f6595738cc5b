"""Why a scene fired for a user, or what was missing: read off the user's own
taken events and the triggers the engine fired, with the scene's numbers.

Pure like the engine: the user's events (in input order), the scene, the
triggers the engine fired for this user and the final clock in; sentences and
figures out. It restates SEMANTICS.md for one user (windows, ``unless``,
cooldowns, absence timers) and names what decided; where the engine fired
nothing although the window qualified, the scene's ``user:`` filter refused
(the only other reason), or, without a filter, the engine's state limits
dropped entries (``engine:``, docs/architecture.md).

Each kind explains its own scenes (``SceneKind.explain`` and ``SceneKind.why``
in its module of :mod:`triggers.kinds`, with the words of
:mod:`triggers.kinds.explaining`); this module looks the kind up in the
registry and never tests a scene's class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from triggers.events import Event, Trigger
from triggers.kinds import kind_of
from triggers.kinds.base import Scene
from triggers.kinds.explaining import (
    MAX_REFUSALS,
    NOTHING_SAID,
    Fired,
    Refusal,
    Said,
    SceneExplanation,
    clock,
    describe,
    hm,
    noun,
)
from triggers.state import UserState

__all__ = ["MAX_REFUSALS", "Fired", "Refusal", "Said", "SceneExplanation", "clock", "describe",
           "explain_scene", "fired_why", "hm", "noun"]


def fired_why(scene: Scene, trigger: Trigger, state: UserState | None = None) -> str:
    """The scene's rule and figures behind one of its triggers, as explain
    prints them: ``3 of 3 views of product_id 1002544 within 30m, no
    purchase``. A fire fixes the figures of repeat, arrival and absence; a
    sequence's start is read from the user's state just after the fire
    (the worker has it), else it is left out."""
    return kind_of(scene).why(scene, trigger, state)


def explain_scene(scene: Scene, events: Sequence[Event], fired: Iterable[Trigger],
                  clock_ms: int | None, said: Said = NOTHING_SAID) -> SceneExplanation:
    """``events``: the user's taken events in input order; ``fired``: the
    engine's triggers of this scene for the user; ``clock_ms``: the final clock."""
    mine = [t for t in fired if t.scene == scene.name]
    return kind_of(scene).explain(scene, events, mine, clock_ms, said)
