"""What the strategies engine asks its host to do. Every action carries the
event-time ``ts`` it was decided at, so replay output is deterministic.

The two that reach a channel (:class:`SendAction`, :class:`HandoffAction`) are
delivery orders, defined by the layer that carries them out (:mod:`channels.orders`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channels.orders import HandoffAction, SendAction
from triggers.audiences.record import ENTER, EXIT, REASON_JOURNEY, AudienceChange

__all__ = ["Action", "AudienceAction", "EnrolAction", "ExitAction", "HandoffAction", "ScoreAction", "SendAction",
           "SuppressedAction", "TagAction", "UserContext", "action_to_dict"]


@dataclass(frozen=True, slots=True)
class UserContext:
    """What the host knows about a user when a trigger arrives (tags from the
    tag store, value segment, current lead score)."""

    tags: frozenset[str] = frozenset()
    segment: str | None = None
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class TagAction:
    user_id: str
    tag: str
    add: bool
    strategy: str
    step: str
    ts: int
    kind: str = field(default="tag", init=False)


@dataclass(frozen=True, slots=True)
class AudienceAction:
    """A journey's audience step: the user enters (``add``) or leaves an
    audience; the host writes it as an audience change (reason ``journey``)."""

    user_id: str
    audience: str
    add: bool
    strategy: str
    step: str
    ts: int
    kind: str = field(default="audience", init=False)

    def change(self) -> AudienceChange:
        return AudienceChange.at(self.audience, self.user_id, ENTER if self.add else EXIT,
                                 self.ts, REASON_JOURNEY)


@dataclass(frozen=True, slots=True)
class ScoreAction:
    user_id: str
    delta: float
    strategy: str
    step: str
    ts: int
    kind: str = field(default="score", init=False)


@dataclass(frozen=True, slots=True)
class EnrolAction:
    """A user entered ``strategy`` (``via`` a scene, a segment or another
    strategy). ``control`` users are held out: they get no message."""

    user_id: str
    strategy: str
    version: int
    via: str
    ts: int
    control: bool = False
    trigger_id: str | None = None
    kind: str = field(default="enrol", init=False)


@dataclass(frozen=True, slots=True)
class ExitAction:
    user_id: str
    strategy: str
    version: int
    reason: str  # exit step, end of steps, goal, control, version_gone
    step: str
    ts: int
    kind: str = field(default="exit", init=False)


@dataclass(frozen=True, slots=True)
class SuppressedAction:
    """A trigger matched a strategy's entry but did not enrol, and why
    (in_progress, reenter_after, entry_condition)."""

    user_id: str
    strategy: str
    reason: str
    via: str
    ts: int
    version: int = 1  # the version the user would have entered
    kind: str = field(default="suppressed", init=False)


Action = (
    SendAction
    | TagAction
    | AudienceAction
    | ScoreAction
    | EnrolAction
    | ExitAction
    | SuppressedAction
    | HandoffAction
)


def action_to_dict(action: Action) -> dict[str, Any]:
    """A JSON-ready mapping (slots dataclasses have no ``__dict__``)."""
    return {name: getattr(action, name) for name in action.__slots__}
