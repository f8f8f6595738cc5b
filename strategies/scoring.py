"""Lead scoring: points per behaviour, exponential decay with a half-life,
and a handoff to sales once per upward crossing of the threshold.

The score is stored as (value, at_ms) and decayed on read:
``value * 2 ** (-(now - at) / half_life)``. A score only rises on an add, so
the crossing check on each add is exact: the handoff re-arms when the decayed
score is below the threshold at the next add, and fires when that add brings
it to the threshold or above. Time is always explicit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from config.strategy_models import ScoringModel
from strategies.actions import HandoffAction
from triggers.audiences.rules import decayed as decay
from triggers.errors import StateDecodeError
from triggers.events import Event


@dataclass(frozen=True, slots=True)
class LeadScore:
    value: float = 0.0
    at_ms: int = 0
    armed: bool = True  # False after a handoff, until the score falls below the threshold

    def to_wire(self) -> list[Any]:
        return [self.value, self.at_ms, self.armed]

    @classmethod
    def from_wire(cls, wire: Any) -> LeadScore:
        try:
            value, at_ms, armed = wire
            return cls(float(value), int(at_ms), bool(armed))
        except (TypeError, ValueError) as exc:
            raise StateDecodeError(f"malformed lead score: {exc}") from None


class ScoreStore(Protocol):
    def get(self, user_id: str) -> LeadScore | None: ...

    def put(self, user_id: str, score: LeadScore) -> None: ...

    def delete(self, user_id: str) -> None: ...

    def items(self) -> Iterator[tuple[str, LeadScore]]: ...


class MemoryScoreStore:
    def __init__(self) -> None:
        self._scores: dict[str, LeadScore] = {}

    def get(self, user_id: str) -> LeadScore | None:
        return self._scores.get(user_id)

    def put(self, user_id: str, score: LeadScore) -> None:
        self._scores[user_id] = score

    def delete(self, user_id: str) -> None:
        self._scores.pop(user_id, None)

    def items(self) -> Iterator[tuple[str, LeadScore]]:
        return iter(list(self._scores.items()))


def decayed(score: LeadScore, now_ms: int, half_life_ms: int) -> float:
    """The score at ``now_ms`` (never above its stored value for a later read):
    the one decay rule, which the audiences' lead score also reads."""
    return decay(score.value, score.at_ms, now_ms, half_life_ms)


class LeadScorer:
    """Applies a :class:`ScoringModel` to events and explicit adjustments."""

    def __init__(self, model: ScoringModel, store: ScoreStore | None = None) -> None:
        self.model = model
        self.store: ScoreStore = store if store is not None else MemoryScoreStore()

    def score_at(self, user_id: str, now_ms: int) -> float:
        score = self.store.get(user_id)
        return 0.0 if score is None else decayed(score, now_ms, self.model.half_life)

    def on_event(self, event: Event) -> list[HandoffAction]:
        points = self.model.points.get(event.type)
        if not points:
            return []
        return self.adjust(event.user_id, points, event.ts)

    def adjust(self, user_id: str, delta: float, ts: int) -> list[HandoffAction]:
        model = self.model
        old = self.store.get(user_id) or LeadScore(0.0, ts, True)
        if ts >= old.at_ms:
            before = decayed(old, ts, model.half_life)
            at = ts
            added = delta
        else:  # a late event: its points arrive already decayed to the stored time
            before = old.value
            at = old.at_ms
            added = delta * 2.0 ** (-(old.at_ms - ts) / model.half_life)
        threshold = model.threshold
        armed = old.armed or (threshold is not None and before < threshold)
        after = max(0.0, before + added)
        out: list[HandoffAction] = []
        if threshold is not None and armed and after >= threshold and before < threshold:
            armed = False
            if model.handoff is not None:
                out.append(HandoffAction(user_id, after, model.handoff.channel,
                                         model.handoff.content, f"handoff|{user_id}|{at}", at))
        self.store.put(user_id, LeadScore(after, at, armed))
        return out
