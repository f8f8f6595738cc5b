"""The per-user trigger budget (``engine.max_triggers_per_user``): pure.

One user could fire without limit: 100,000 distinct pages in 30 minutes
fired 100,000 ``promo_arrival`` triggers (scene state stayed capped, the
triggers did not). With a budget of ``count`` within ``within``, a trigger
of a user who already has ``count`` triggers stamped after ``ts - within``
is refused: the engine records a refusal (a decision record, a metric)
instead of a trigger. The scene itself did fire (its cooldown starts, its
timer is consumed), as a delivery cap leaves a scene's state alone; only the
trigger is held back (docs/semantics-notes.md).

The state it needs is the ``count`` largest trigger times the user was
given, sorted (:attr:`triggers.state.UserState.budget`): "``count`` of all
given triggers are later than ``ts - within``" holds exactly when it holds
for the ``count`` largest, so nothing else is kept. Refused triggers are
not counted.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass

from triggers.durations import format_duration_ms


@dataclass(frozen=True, slots=True)
class TriggerBudget:
    """At most ``count`` triggers per user within ``within_ms`` (event time)."""

    count: int
    within_ms: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.within_ms < 1:
            raise ValueError("a trigger budget needs count >= 1 and within >= 1 ms")

    def take(self, given: list[int], ts: int) -> bool:
        """True (and ``ts`` recorded in ``given``, the user's sorted trigger
        times) when a trigger at ``ts`` fits the budget; False: refuse it."""
        count = self.count
        if len(given) > count:  # a lowered count (hot reload): keep the newest
            del given[:len(given) - count]
        if len(given) - bisect_right(given, ts - self.within_ms) >= count:
            return False
        insort(given, ts)
        if len(given) > count:
            del given[0]
        return True

    def describe(self) -> str:
        return f"{self.count} within {format_duration_ms(self.within_ms)}"


def merge_given(mine: list[int], theirs: list[int], keep: int) -> list[int]:
    """Two ids' trigger times as one user's (an identity merge): the ``keep``
    largest of both (at least as many as either had; :meth:`TriggerBudget.take`
    trims to the budget's count)."""
    keep = max(keep, len(mine), len(theirs))
    return sorted(mine + theirs)[-keep:]
