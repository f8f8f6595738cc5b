"""The words of an explanation, shared by the scene kinds: what
``explain`` (:mod:`triggers.explain`) says about one scene for one user.

Each kind's module explains its own scenes with these
(``SceneKind.explain`` and ``SceneKind.why``, :mod:`triggers.kinds.base`);
:mod:`triggers.explain` looks the kind up in the registry. Pure like the
engine: no clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from triggers.events import Event, Trigger
from triggers.predicates import Predicate, as_compared_string
from triggers.userfilter import UserFilter

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
    """``views`` for ``{type: view}`` (``searches`` for ``search``), when the
    type is a word English names that way (:func:`plural_of`); else the
    predicate in brackets: ``events (type=clicks)``, never ``clickss``."""
    if predicate is not None and len(predicate.conditions) == 1:
        name, cond = predicate.conditions[0]
        if name == "type" and cond.equals is not None and not cond.one_of and not cond.prefix:
            word = plural_of(cond.equals)
            if word is not None:
                return word if plural else cond.equals
    return f"events ({describe(predicate)})" if plural else f"event ({describe(predicate)})"


def a_noun(predicate: Predicate | None) -> str:
    """One such event, with its article: ``a purchase``, ``an order``,
    ``an event (type=clicks)``."""
    word = noun(predicate, False)
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


_WORD = re.compile(r"[a-z]+")


def plural_of(event_type: str) -> str | None:
    """The plural of an event type that is one lowercase word: ``view`` ->
    ``views``, ``search`` -> ``searches``, ``reply`` -> ``replies``. None
    when no rule can say: a word ending in ``s`` may be a plural already (OTTO's
    ``clicks``), in ``ed`` a participle (``delivered``), and ``add_to_cart``
    or ``Search`` are names, not words."""
    if not _WORD.fullmatch(event_type) or event_type.endswith(("s", "ed")):
        return None
    if event_type.endswith(("ch", "sh", "x", "z")):
        return event_type + "es"
    if len(event_type) > 1 and event_type.endswith("y") and event_type[-2] not in "aeiou":
        return event_type[:-1] + "ies"
    return event_type + "s"


# Per scene, per time: the engine's own words for a user-filter refusal
# (triggers.events.Refusal.text(), or the worker's decision record of it).
Said = Mapping[tuple[str, int], str]
NOTHING_SAID: Said = {}


class Keyed(Protocol):
    """A scene with an optional ``per`` field."""

    @property
    def per(self) -> str | None: ...


class Cooled(Keyed, Protocol):
    @property
    def cooldown_ms(self) -> int | None: ...


class Filtered(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def user(self) -> UserFilter | None: ...


class Explained(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


def per_value(scene: Keyed, event: Event) -> tuple[bool, str | None]:
    """Whether the event has the scene's ``per`` field, and its value as compared."""
    if scene.per is None:
        return True, None
    value = as_compared_string(event.fields.get(scene.per))
    return value is not None, value


def for_key(scene: Keyed, key: str | None) -> str:
    return "" if scene.per is None else f" of {scene.per} {key}"


def cooling(scene: Cooled, fires: list[Trigger], key: str | None, ts: int) -> Trigger | None:
    """The fire of ``key`` whose cooldown covers ``ts``, if any."""
    if scene.cooldown_ms is None:
        return None
    hot = [f for f in fires if f.key == key and f.ts <= ts and ts - f.ts < scene.cooldown_ms]
    return hot[-1] if hot else None


def not_fired_reason(scene: Filtered, said: Said, ts: int) -> str:
    """Why a qualifying window did not fire: the engine's words when it said
    them, else the user filter, else the engine's state limits."""
    engine = said.get((scene.name, ts))
    if engine is not None:
        return engine
    if scene.user is not None:
        return "the scene's user filter refused this user"
    return "the window's entries were pruned (engine limits)"


def plain(scene: Explained, fires: list[Trigger]) -> SceneExplanation:
    """The explanation of a kind that reads no story from the events: its
    fires, and that it did not fire."""
    fired = tuple(Fired(t, f"{scene.kind} fired") for t in fires)
    return SceneExplanation(scene.name, scene.kind, fired, (), None if fires else
                            f"did not fire (no explanation for kind {scene.kind!r} yet)")
