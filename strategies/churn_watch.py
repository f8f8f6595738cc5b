"""Churn tags as the clock moves (docs/timing.md, "Churn in the running
services"). Pure: profiles and a clock in, users whose churn tags changed out.

P(active) (:mod:`triggers.churn`) only falls while a buyer stays silent, so
from a user's purchases the times their tags change can be computed ahead:
``churn_risk_high`` when it falls below ``risk_high_below``, ``churned``
below ``churned_below``. :class:`ChurnWatch` keeps, per buyer, the three
numbers the model reads (repeat occasions, first and newest purchase) and
the next time to look, in a heap; a host feeds it the profiles it sees
(``observe``) and asks it on every tick (``due``), then sets the tags and
lets tag entries enrol (``JourneyEngine.on_user``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from config.strategy_models import TagRulesModel
from triggers.churn import CHURN_RISK_HIGH, CHURNED, DAY_MS
from triggers.cycle import as_cycle
from triggers.profile import Profile

HOUR_MS = 3_600_000
HORIZON_MS = 10 * 365 * DAY_MS  # beyond this no change is looked for
ALL_CHURN = frozenset({CHURN_RISK_HIGH, CHURNED})


@dataclass(frozen=True, slots=True)
class Buyer:
    """What the churn model reads of a profile."""

    repeats: int
    first_ms: int
    last_ms: int

    @classmethod
    def of(cls, profile: Profile | None) -> Buyer | None:
        if profile is None or profile.first_purchase_ts is None \
                or profile.last_purchase_ts is None:
            return None
        cycle = as_cycle(profile.cycle)
        return cls(cycle.intervals if cycle is not None else 0, profile.first_purchase_ts,
                   profile.last_purchase_ts)

    def tags(self, rules: TagRulesModel, now_ms: int) -> frozenset[str]:
        """As :func:`strategies.tags.churn_tags` reads the profile."""
        churn = rules.churn
        t_x = (self.last_ms - self.first_ms) / DAY_MS
        age = max(now_ms - self.first_ms, self.last_ms - self.first_ms) / DAY_MS
        active = churn.model().p_active(self.repeats, t_x, age, churn.horizon_days)
        if active >= churn.risk_high_below:
            return frozenset()
        return ALL_CHURN if active < churn.churned_below else frozenset({CHURN_RISK_HIGH})

    def next_change(self, rules: TagRulesModel, now_ms: int) -> int | None:
        """The first hour after ``now_ms`` whose tags differ (None: never)."""
        current = self.tags(rules, now_ms)
        if current == ALL_CHURN:
            return None
        low, high = now_ms, now_ms + HORIZON_MS
        if self.tags(rules, high) == current:
            return None
        while high - low > HOUR_MS:  # tags only grow with silence: bisect
            middle = (low + high) // 2
            if self.tags(rules, middle) == current:
                low = middle
            else:
                high = middle
        return high


class ChurnWatch:
    def __init__(self, rules: TagRulesModel) -> None:
        self.rules = rules
        self._buyers: dict[str, Buyer] = {}
        self._next: dict[str, int] = {}  # user -> the time to look again
        self._heap: list[tuple[int, str]] = []

    def observe(self, user_id: str, profile: Profile | None, now_ms: int) -> frozenset[str]:
        """A profile seen at ``now_ms``: the user's churn tags now (empty for
        one who never bought), and when to look again."""
        buyer = Buyer.of(profile)
        if buyer is None:
            self._buyers.pop(user_id, None)
            self._next.pop(user_id, None)
            return frozenset()
        self._buyers[user_id] = buyer
        self._schedule(user_id, buyer, now_ms)
        return buyer.tags(self.rules, now_ms)

    def forget(self, user_id: str) -> None:
        """An erased user: nothing of them is kept, nothing is due (their
        heap entries are stale now)."""
        self._buyers.pop(user_id, None)
        self._next.pop(user_id, None)

    def due(self, now_ms: int) -> list[tuple[str, frozenset[str]]]:
        """Users whose churn tags changed by ``now_ms``, with their tags now."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            when, user_id = heapq.heappop(heap)
            if self._next.get(user_id) != when:
                continue  # re-observed since: a stale entry
            del self._next[user_id]
            buyer = self._buyers[user_id]
            out.append((user_id, buyer.tags(self.rules, now_ms)))
            self._schedule(user_id, buyer, now_ms)
        return out

    def _schedule(self, user_id: str, buyer: Buyer, now_ms: int) -> None:
        when = buyer.next_change(self.rules, now_ms)
        if when is None:
            self._next.pop(user_id, None)
            return
        self._next[user_id] = when
        heapq.heappush(self._heap, (when, user_id))

    def __len__(self) -> int:
        return len(self._next)
