"""What a user's state keeps for the audiences (``UserState.audience``):
the audiences the user is in (with the enter time), the last fire time of
the scenes audiences watch, the lead score the audiences read, the time of
the next re-evaluation (so a restarted worker re-arms it exactly) and of the
last one (a late event is evaluated no earlier: a user's changes never go
back in time).

Wire form (the eighth element of the state list, only when non-empty):
``[members, fired, score or null, due or null, at or null]``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class AudienceData:
    __slots__ = ("at", "due", "fired", "members", "score")

    def __init__(self) -> None:
        self.members: dict[str, int] = {}  # audience -> entered at (ms)
        self.fired: dict[str, int] = {}  # watched scene -> newest fire (ms)
        self.score: tuple[float, int] | None = None  # (value, at ms)
        self.due: int | None = None  # next re-evaluation (ms)
        self.at: int | None = None  # last evaluation (ms)

    def last_fire(self, scenes: Iterable[str]) -> int | None:
        fired = self.fired
        times = [fired[s] for s in scenes if s in fired]
        return max(times) if times else None

    @property
    def empty(self) -> bool:
        return (not self.members and not self.fired and self.score is None
                and self.due is None)

    def to_wire(self) -> list[Any]:
        score = None if self.score is None else list(self.score)
        return [self.members, self.fired, score, self.due, self.at]

    @classmethod
    def from_wire(cls, wire: Any) -> AudienceData:
        members, fired, score, due, at = wire
        data = cls()
        data.members = {str(k): int(v) for k, v in members.items()}
        data.fired = {str(k): int(v) for k, v in fired.items()}
        data.score = None if score is None else (float(score[0]), int(score[1]))
        data.due = None if due is None else int(due)
        data.at = None if at is None else int(at)
        return data
