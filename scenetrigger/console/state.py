"""What the operator console shows, gathered in memory from one stream of
events, triggers and decision records (the embedded replay and the Kafka
tail feed it alike): per-minute trigger and delivery counts by scene and
strategy, recent decisions, dead-letter counts, funnel inputs and the
records a user lookup assembles into a timeline. Bounded everywhere."""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.feedback.decisions import (
    CONSENT,
    ERASED,
    OUTCOME_TRIGGERED,
    DecisionRecord,
    MemoryDecisionLog,
)
from config.models import AppConfig
from triggers.audiences.record import AudienceChange
from triggers.events import Event, Trigger
from triggers.state import UserState

BUCKET_MS = 60_000  # rates are per minute of the records' own time
CONTROL = "control"


@dataclass(frozen=True, slots=True)
class Limits:
    buckets: int = 240  # minutes of rates kept
    recent: int = 200  # decisions listed
    records: int = 100_000  # events, trigger lines and decisions kept for lookups and funnels


class ConsoleState:
    """Also a :class:`channels.feedback.decisions.DecisionLog` (``write``)."""

    def __init__(self, config: AppConfig, limits: Limits | None = None) -> None:
        self.config = config
        self.limits = limits or Limits()
        self.buckets: OrderedDict[int, Counter[str]] = OrderedDict()
        self.recent: deque[DecisionRecord] = deque(maxlen=self.limits.recent)
        self.decisions = MemoryDecisionLog(self.limits.records)
        self.events: deque[Event] = deque(maxlen=self.limits.records)
        self.lines: OrderedDict[str, dict[str, Any]] = OrderedDict()  # trigger_id -> line
        self.memberships: deque[AudienceChange] = deque(maxlen=self.limits.records)  # ads: ROI
        self.dead_letters: Counter[str] = Counter()  # events rejected, by reason
        # Consent changes and erasures, by outcome: records of no scene.
        self.consent_changes: Counter[str] = Counter()
        self.delivery_dead_letters = 0
        self.totals: Counter[str] = Counter()
        self.states: Callable[[str], UserState | None] | None = None  # embedded engine's
        self.clock_ms: int | None = None
        self.source = ""
        self.done = False  # the source reached its end (embedded replay)
        # Erased users (their receipts' time): their records up to then are
        # dropped as they are read (Kafka keeps them until retention ends).
        self.erased: dict[str, int] = {}

    # -- feeding ----------------------------------------------------------------

    def _count(self, ts: int, name: str) -> None:
        minute = ts - ts % BUCKET_MS
        bucket = self.buckets.get(minute)
        if bucket is None:
            bucket = self.buckets[minute] = Counter()
            if len(self.buckets) > self.limits.buckets:
                oldest = min(self.buckets)
                del self.buckets[oldest]
        bucket[name] += 1
        self.totals[name] += 1

    def _was_erased(self, user_id: str, ts: int) -> bool:
        erased = self.erased
        return bool(erased) and ts <= erased.get(user_id, -1)

    def event(self, event: Event) -> None:
        if self._was_erased(event.user_id, event.ts):
            return
        self.events.append(event)
        self.totals["events"] += 1
        if self.clock_ms is None or event.ts > self.clock_ms:
            self.clock_ms = event.ts

    def rejected(self, reason: str) -> None:
        self.dead_letters[reason] += 1

    def trigger(self, trig: Trigger) -> None:
        if self._was_erased(trig.user_id, trig.ts):
            return
        self._count(trig.ts, f"trigger:{trig.scene}")
        self.lines[trig.trigger_id] = trig.to_dict()
        while len(self.lines) > self.limits.records:
            self.lines.popitem(last=False)

    def membership(self, change: AudienceChange) -> None:
        if not self._was_erased(change.user_id, int(change.ts * 1000)):
            self.memberships.append(change)

    def tombstone(self, audience: str, user_id: str) -> None:
        """An erasure deleted the key ``audience|user_id`` of the audiences
        topic: nothing kept here under it stays."""
        self.memberships = deque((m for m in self.memberships
                                  if m.user_id != user_id or m.audience != audience),
                                 maxlen=self.limits.records)

    def write(self, record: DecisionRecord) -> None:
        if record.outcome != ERASED and self._was_erased(record.user_id, record.ts):
            return
        self.recent.append(record)
        self.decisions.write(record)
        if record.outcome == OUTCOME_TRIGGERED:
            return  # the worker's own record of a fire: counted from the triggers topic
        if record.scene == CONSENT:  # it belongs to no message and no scene
            self.consent_changes[record.outcome] += 1
            return
        self._count(record.ts, f"{record.outcome}:{record.scene}")
        line = self.lines.get(record.trigger_id)
        if line is not None:  # the funnel's replay line: trigger + its decision
            line.update({"delivery": record.outcome, "variant": record.variant,
                         "channel": record.channel})
            if record.rule is not None:
                line["reason"] = record.rule
            if record.rule == CONTROL:
                line["group"] = CONTROL

    def erase(self, user_id: str) -> int:
        """Forget the user here (events, trigger lines, decisions)."""
        before = len(self.events) + len(self.lines) + len(self.decisions.records)
        self.events = deque((e for e in self.events if e.user_id != user_id),
                            maxlen=self.limits.records)
        for tid in [t for t, line in self.lines.items() if line["user_id"] == user_id]:
            del self.lines[tid]
        self.decisions.erase(user_id)
        self.memberships = deque((m for m in self.memberships if m.user_id != user_id),
                                 maxlen=self.limits.records)
        self.recent = deque((r for r in self.recent if r.user_id != user_id),
                            maxlen=self.limits.recent)
        return before - len(self.events) - len(self.lines) - len(self.decisions.records)

    # -- views --------------------------------------------------------------------

    def rates(self) -> dict[str, Any]:
        """Per-minute counts: ``t`` (minute starts, seconds) and one series per
        ``trigger:SCENE`` / ``OUTCOME:SCENE`` (journey sends: ``journey:NAME``)."""
        minutes = sorted(self.buckets)
        names = sorted({name for b in self.buckets.values() for name in b})
        return {"t": [m // 1000 for m in minutes],
                "series": {n: [self.buckets[m].get(n, 0) for m in minutes] for n in names}}

    def summary(self) -> dict[str, Any]:
        scenes: dict[str, Counter[str]] = {}
        for name, n in self.totals.items():
            kind, _, scene = name.partition(":")
            if scene:
                scenes.setdefault(scene, Counter())[kind] += n
        return {"source": self.source, "done": self.done, "clock": self.clock_ms,
                "events": self.totals["events"],
                "scenes": {s: dict(c) for s, c in sorted(scenes.items())},
                "dead_letters": dict(self.dead_letters),
                "consent_changes": dict(self.consent_changes),
                "delivery_dead_letters": self.delivery_dead_letters}

    def recent_decisions(self) -> list[dict[str, Any]]:
        return [r.to_dict() | {"text": r.text()} for r in reversed(self.recent)]

    def funnels(self) -> Callable[[], list[dict[str, Any]]]:
        """Funnel rows with uplift and its CI (``scenetrigger report``'s, on what is
        kept). Returns the work to do: the records are copied here, on the loop
        that feeds them, so the returned function may run in a thread."""
        from strategies.reporting import build_report, options_of

        options = options_of(self.config)
        lines, events = self._kept()

        def rows() -> list[dict[str, Any]]:
            _in_order(lines, events)
            return [row.to_dict() for row in build_report(lines, events, options)]

        return rows

    def journeys(self) -> Callable[[], list[dict[str, Any]]]:
        """Every strategy's step funnel (``report --journey``'s, with the
        decisions kept here), as :meth:`funnels`: copied now, built later."""
        from strategies.reporting import build_report, options_of
        from strategies.step_funnel import StepFunnels

        options = options_of(self.config)
        lines, events = self._kept()
        decisions = list(self.decisions.records)

        def funnels() -> list[dict[str, Any]]:
            _in_order(lines, events)
            steps = StepFunnels()
            build_report(lines, events, options, steps)
            steps.decisions(decisions)
            return [steps.result(name) for name in options.journeys]

        return funnels

    def kpis(self) -> Callable[[], dict[str, Any]]:
        """The shop's KPIs (``report --kpis``'s) on the events and lines kept,
        as :meth:`funnels`: copied now, computed later."""
        from strategies.kpis import Kpis

        control = self.config.strategies.control
        lines, events = self._kept()

        def figures() -> dict[str, Any]:
            kpis = Kpis()
            for event in events:
                kpis.on_event(event)
            return {"global_share": control.global_share, "kpis": kpis.result(lines, control)}

        return figures

    def channels(self, spend: list[Any]) -> Callable[[], dict[str, Any]]:
        """Return per ad sink and audience (``report --by channel --json``'s) on
        the memberships and events kept, as :meth:`funnels`."""
        from strategies.ads_roi import channel_json, channel_report

        ads, section = self.config.ads, self.config.strategies
        routes = {name: dict(model.audiences) for name, model in ads.sinks.items()}
        members, events = list(self.memberships), list(self.events)

        def report() -> dict[str, Any]:
            window = section.attribution.window
            rows = channel_report(routes, members, events, spend, holdout=ads.holdout,
                                  salt=section.control.salt, window_ms=window)
            return channel_json(rows, holdout=ads.holdout, window_ms=window)

        return report

    def _kept(self) -> tuple[list[dict[str, Any]], list[Event]]:
        """Copies of the kept trigger lines and events (sorted later, off the loop)."""
        return [dict(line) for line in self.lines.values()], list(self.events)

    def timeline(self, user_id: str) -> Callable[[], Any]:
        """The user's explain timeline, as :meth:`funnels`: copied now, built later."""
        from scenetrigger.ops.explain import assemble_timeline

        events = [e for e in self.events if e.user_id == user_id]
        triggers = [Trigger(line["scene"], line["user_id"], line["key"], line["ts"])
                    for line in self.lines.values() if line["user_id"] == user_id]
        decisions = self.decisions.for_user(user_id)
        state = self.states(user_id) if self.states is not None else None
        state = None if state is None else UserState.decode(state.encode())  # a copy
        config, clock = self.config, self.clock_ms or 0
        return lambda: assemble_timeline(user_id, events, triggers, decisions, state, config,
                                         clock)


def _in_order(lines: list[dict[str, Any]], events: list[Event]) -> None:
    lines.sort(key=lambda line: int(line["ts"]))
    events.sort(key=lambda e: e.ts)
