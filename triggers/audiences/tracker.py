"""Live audience membership, sans-I/O: the engine's events, triggers and
clock in, enter and exit changes out (docs/ads.md, "Audiences").

After the engine applies an event (and fires what it fires), the host hands
both here (:meth:`AudienceTracker.after`): the watched scenes' fire times
and the lead score are noted in the user's state, then the user's audiences
are evaluated at the event's time and compared with the ones stored; each
difference is a change. Each evaluation also computes when a condition could
next change with no event (:func:`triggers.audiences.rules.next_change`);
those times sit in a heap, checked against the user's state when popped
(like the engine's timers), and a clock moving past one re-evaluates the
user at that exact time (:meth:`AudienceTracker.advance`), so a window that
runs out is an exit at its own time. The same rule as the engine's timers:
a time is due when the clock is strictly past it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence

from triggers.audiences.data import AudienceData
from triggers.audiences.record import (
    ENTER,
    EXIT,
    REASON_CONDITION,
    REASON_EXPIRED,
    REASON_PURCHASE,
    AudienceChange,
)
from triggers.audiences.rules import Audience, Scoring, add_points, holds, next_change
from triggers.events import Event, Trigger
from triggers.state import StateStore, UserState
from triggers.userfilter import ClassifyRules

ChangeSink = Callable[[AudienceChange], None]
PURCHASE = "purchase"


class AudienceTracker:
    """The audiences of one engine's users. Changes wait in :attr:`pending`
    in the order they happen: :meth:`take` them, or :meth:`flush` them to
    ``sink`` (replay writes them after the triggers of the same event)."""

    def __init__(self, audiences: Sequence[Audience], rules: ClassifyRules, store: StateStore,
                 scoring: Scoring | None = None, sink: ChangeSink | None = None) -> None:
        self.audiences = tuple(a for a in audiences if not a.journey)
        self.rules = rules
        self.store = store
        self.scoring = scoring or Scoring()
        self.pending: list[AudienceChange] = []
        self.sink = sink
        self.watched = frozenset(s for a in self.audiences for s in a.fired)
        self.points = self.scoring.points if any(a.reads_score for a in self.audiences) else {}
        self._heap: list[tuple[int, str]] = []  # (due, user)
        self._names = frozenset(a.name for a in self.audiences)

    # -- inputs ---------------------------------------------------------------

    def after(self, event: Event | None, fired: Sequence[Trigger]) -> None:
        """The engine applied ``event`` (None: only the clock moved) and fired
        ``fired``: note the fires, evaluate each user they touched at its
        time, and the event's user at the event's time."""
        own: list[Trigger] = []
        for trig in fired:
            if trig.scene not in self.watched:
                continue  # nothing the audiences read changed
            if event is not None and trig.user_id == event.user_id and trig.ts == event.ts:
                own.append(trig)  # evaluated once, with the event
                continue
            self.advance(trig.ts)
            self._evaluate(trig.user_id, trig.ts, None, (trig,))
        if event is not None:
            self.advance(event.ts)
            self._evaluate(event.user_id, event.ts, event, own)

    def advance(self, now_ms: int) -> None:
        """Re-evaluate every user whose next change time is before ``now_ms``."""
        heap = self._heap
        while heap and heap[0][0] < now_ms:
            due, user_id = heapq.heappop(heap)
            state = self.store.get(user_id)
            data = state.audience if state is not None else None
            if data is None or data.due != due:
                continue  # re-evaluated since: a stale entry
            self._evaluate(user_id, due, None, (), state)

    def evaluate(self, user_id: str, now_ms: int) -> None:
        """Evaluate one user now (after a change the events did not bring: a merge)."""
        self._evaluate(user_id, now_ms, None, (), reason=REASON_CONDITION)

    def next_deadline(self) -> int | None:
        """The earliest live re-evaluation time (for a sweeper deciding when to wake)."""
        heap = self._heap
        while heap:
            due, user_id = heap[0]
            state = self.store.get(user_id)
            if state is not None and state.audience is not None and state.audience.due == due:
                return due
            heapq.heappop(heap)
        return None

    def rebuild(self, users: Iterable[tuple[str, UserState]] | None = None) -> int:
        """The re-evaluation heap from stored states (a restart, a rebalance)."""
        source = self.store.items() if users is None else users
        return self.rearm((s.audience.due, user_id) for user_id, s in source
                          if s.audience is not None and s.audience.due is not None)

    def rearm(self, dues: Iterable[tuple[int, str]]) -> int:
        """The re-evaluation heap from ``(due, user_id)`` pairs read off stored states."""
        heap = list(dues)
        heapq.heapify(heap)
        self._heap = heap
        return len(heap)

    def leave_all(self, user_id: str, state: UserState | None, now_ms: int, reason: str) -> None:
        """The user leaves every audience (erased, or merged into another id)."""
        data = state.audience if state is not None else None
        if data is None:
            return
        for name in sorted(data.members):
            self.pending.append(AudienceChange.at(name, user_id, EXIT, now_ms, reason))
        data.members = {}
        data.due = None

    def flush(self) -> None:
        """Hand the pending changes to the sink (kept when there is none)."""
        sink = self.sink
        if sink is None or not self.pending:
            return
        for change in self.pending:
            sink(change)
        self.pending.clear()

    def take(self) -> list[AudienceChange]:
        out = self.pending[:]
        self.pending.clear()
        return out

    # -- evaluation -----------------------------------------------------------

    def _evaluate(self, user_id: str, now_ms: int, event: Event | None,
                  fires: Sequence[Trigger], state: UserState | None = None,
                  reason: str | None = None) -> None:
        if state is None:
            state = self.store.get(user_id)
            if state is None:
                return
        data = state.audience
        if data is None:
            data = AudienceData()
        elif data.at is not None and data.at > now_ms:
            now_ms = data.at  # a late event (or fire): the user's time never goes back
        for trig in fires:
            held = data.fired.get(trig.scene)
            if held is None or trig.ts > held:
                data.fired[trig.scene] = trig.ts
        if event is not None and self.points:
            points = self.points.get(event.type)
            if points:
                data.score, _ = add_points(data.score, points, event.ts,
                                           self.scoring.half_life_ms)
        profile, rules, scoring = state.profile, self.rules, self.scoring
        members = data.members
        due: int | None = None
        for audience in self.audiences:
            name = audience.name
            inside = holds(audience, profile, data, rules, scoring, now_ms)
            if inside != (name in members):
                if inside:
                    members[name] = now_ms
                    self.pending.append(AudienceChange.at(name, user_id, ENTER, now_ms, REASON_CONDITION))
                else:
                    del members[name]
                    self.pending.append(AudienceChange.at(name, user_id, EXIT, now_ms,
                                                          reason or _exit_reason(event)))
            change = next_change(audience, profile, data, rules, scoring, now_ms)
            if change is not None and (due is None or change < due):
                due = change
        for name in [n for n in members if n not in self._names]:
            del members[name]  # an audience a reload removed
            self.pending.append(AudienceChange.at(name, user_id, EXIT, now_ms, REASON_CONDITION))
        if due is not None and due != data.due:
            heapq.heappush(self._heap, (due, user_id))
        data.due = due
        data.at = now_ms
        if state.audience is None and not data.empty:
            state.audience = data
        self.store.put(user_id, state)


def _exit_reason(event: Event | None) -> str:
    if event is None:
        return REASON_EXPIRED
    return REASON_PURCHASE if event.type == PURCHASE else REASON_CONDITION
