"""What the strategies engine asks its host to do. Every action carries the
event-time ``ts`` it was decided at, so replay output is deterministic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class UserContext:
    """What the host knows about a user when a trigger arrives (tags from the
    tag store, value segment, current lead score)."""

    tags: frozenset[str] = frozenset()
    segment: str | None = None
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class SendAction:
    """Send ``content_ref`` to the user on ``channel``. ``message_id`` is
    deterministic (strategy, version, user, enrolment time, step, channel)."""

    user_id: str
    channel: str
    content_ref: str
    strategy: str
    step: str
    message_id: str
    ts: int
    version: int = 1
    trigger_id: str | None = None
    # Filled by a host that renders the content (channels.content): the
    # engine itself only names ``content_ref``.
    variant: str | None = None
    subject: str | None = None
    text: str | None = None
    kind: str = field(default="send", init=False)


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
    reason: str  # exit step, end of steps, control, version_gone
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


@dataclass(frozen=True, slots=True)
class HandoffAction:
    """A lead crossed the score threshold: hand it to sales on ``channel``."""

    user_id: str
    score: float
    channel: str
    content_ref: str
    message_id: str
    ts: int
    kind: str = field(default="handoff", init=False)


Action = (
    SendAction
    | TagAction
    | ScoreAction
    | EnrolAction
    | ExitAction
    | SuppressedAction
    | HandoffAction
)


def action_to_dict(action: Action) -> dict[str, Any]:
    """A JSON-ready mapping (slots dataclasses have no ``__dict__``)."""
    return {name: getattr(action, name) for name in action.__slots__}
