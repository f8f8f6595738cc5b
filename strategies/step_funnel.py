"""The journey step funnel (``report --journey NAME``, the console's journey
table): per strategy version and step, how many runs entered it, the
messages it sent, what was suppressed and why, the opens and clicks of its
messages, the conversions made while users were at it, and the exits from
it by reason.

Fed by :func:`strategies.reporting.build_report` in stream order: the
engine's step listener (every step a run enters), the journey actions, the
feedback events, the attributor's conversions and, optionally, delivery
decisions of journey sends. Definitions: docs/measurement.md, "Journey step
funnel".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from strategies.actions import Action, EnrolAction, ExitAction, SendAction, SuppressedAction
from strategies.model import Registry, Step
from strategies.state import Run

CONTROL = "control"
# Delivery outcomes of a journey send that count as not sent (decision log).
_NOT_SENT = ("suppressed", "deferred", "failed")


@dataclass
class StepRow:
    version: int
    index: int
    step: str
    kind: str
    entered: int = 0
    entered_control: int = 0
    sent: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    converted_control: int = 0
    exited: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "step": self.step, "kind": self.kind,
                "entered": self.entered, "entered_control": self.entered_control,
                "sent": self.sent, "suppressed": dict(sorted(self.suppressed.items())),
                "opened": self.opened, "clicked": self.clicked, "converted": self.converted,
                "converted_control": self.converted_control,
                "exited": dict(sorted(self.exited.items()))}


@dataclass
class JourneyFunnel:
    """One strategy's rows; ``entry_suppressed``: triggers that did not enrol, by reason."""

    name: str
    rows: dict[tuple[int, str], StepRow] = field(default_factory=dict)
    enrolled: int = 0
    enrolled_control: int = 0
    entry_suppressed: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        rows = sorted(self.rows.values(), key=lambda r: (r.version, r.index))
        return {"strategy": self.name, "enrolled": self.enrolled,
                "enrolled_control": self.enrolled_control,
                "entry_suppressed": dict(sorted(self.entry_suppressed.items())),
                "steps": [r.to_dict() for r in rows]}


@dataclass
class _RunSeen:
    row: StepRow  # the step the run is at (or left from)
    control: bool


class StepFunnels:
    """Every strategy's step funnel; the rows of a version's steps exist from
    its first enrolment, so a step nobody reached shows zeros."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()  # build_report sets the one it runs
        self.journeys: dict[str, JourneyFunnel] = {}
        self._runs: dict[tuple[str, str, int], _RunSeen] = {}  # (user, strategy, entered)
        self._current: dict[tuple[str, str], int] = {}  # (user, strategy) -> entered
        self._messages: dict[str, StepRow] = {}  # message id -> the step that sent it
        self._seen: set[tuple[str, str]] = set()  # (message id, feedback kind)

    def _journey(self, name: str) -> JourneyFunnel:
        journey = self.journeys.get(name)
        if journey is None:
            journey = self.journeys[name] = JourneyFunnel(name)
        return journey

    def _row(self, name: str, version: int, step: Step) -> StepRow:
        journey = self._journey(name)
        row = journey.rows.get((version, step.id))
        if row is None:
            strategy = self.registry.get(name, version)
            for each in strategy.steps if strategy is not None else (step,):
                journey.rows.setdefault((version, each.id),
                                        StepRow(version, each.index, each.id, each.kind))
            row = journey.rows[(version, step.id)]
        return row

    def step(self, user_id: str, name: str, run: Run, step: Step, ts: int) -> None:
        """The engine's step listener."""
        row = self._row(name, run.version, step)
        row.entered += 1
        if run.control:
            row.entered_control += 1
            if step.kind == "send":
                row.suppressed[CONTROL] += 1
        self._current[(user_id, name)] = run.entered_ms
        self._runs[(user_id, name, run.entered_ms)] = _RunSeen(row, run.control)

    def action(self, action: Action) -> None:
        if isinstance(action, EnrolAction):
            journey = self._journey(action.strategy)
            journey.enrolled += 1
            journey.enrolled_control += action.control
        elif isinstance(action, SuppressedAction):
            self._journey(action.strategy).entry_suppressed[action.reason] += 1
        elif isinstance(action, SendAction):
            # by the action's step: the run may have moved on within the same call
            row = self._journey(action.strategy).rows.get((action.version, action.step))
            if row is not None:
                row.sent += 1
                self._messages[action.message_id] = row
        elif isinstance(action, ExitAction):
            row = self._journey(action.strategy).rows.get((action.version, action.step))
            if row is None:  # an exit at the end carries no step id: the last one entered
                seen = self._run_of(action.user_id, action.strategy)
                row = None if seen is None else seen.row
            if row is not None:
                row.exited[action.reason] += 1

    def _run_of(self, user_id: str, name: str) -> _RunSeen | None:
        entered = self._current.get((user_id, name))
        return None if entered is None else self._runs.get((user_id, name, entered))

    def feedback(self, kind: str, fields: Mapping[str, Any]) -> None:
        """An opened/clicked event of a journey message (by its ``message_id``),
        once per message and kind."""
        message_id = fields.get("message_id")
        row = self._messages.get(message_id) if isinstance(message_id, str) else None
        if row is None or kind not in ("opened", "clicked") or \
                (message_id, kind) in self._seen:
            return
        self._seen.add((str(message_id), kind))
        if kind == "opened":
            row.opened += 1
        else:
            row.clicked += 1

    def converted(self, kind: str, name: str, user_id: str, entered_ms: int) -> None:
        """The attributor converted a strategy unit: the step its run was at."""
        seen = self._runs.get((user_id, name, entered_ms)) if kind == "strategy" else None
        if seen is not None:
            seen.row.converted += 1
            seen.row.converted_control += seen.control

    def decisions(self, records: Iterable[Any]) -> None:
        """Delivery outcomes of journey sends (decision-log records with a
        ``j|...`` message id this report's journeys sent): refused, deferred
        or failed ones counted as suppressed, by outcome and rule."""
        for record in records:
            row = self._messages.get(record.message_id) if record.message_id else None
            if row is None or record.outcome not in _NOT_SENT:
                continue
            label = record.rule or record.outcome
            row.suppressed[label if record.outcome == "suppressed"
                           else f"{record.outcome}:{label}"] += 1

    def result(self, name: str) -> dict[str, Any]:
        return (self.journeys.get(name) or JourneyFunnel(name)).to_dict()


def render_journey(funnel: Mapping[str, Any]) -> str:
    head = (f"{'ver':>3} {'step':<20} {'kind':<7} {'entered':>7} {'(ctrl)':>6} {'sent':>5} "
            f"{'supp':>5} {'open':>5} {'click':>5} {'conv':>5} {'exited':>6}")
    lines = [f"journey {funnel['strategy']}: enrolled {funnel['enrolled']} "
             f"(control {funnel['enrolled_control']})", head, "-" * len(head)]
    for key, n in funnel["entry_suppressed"].items():
        lines.insert(1, f"  not enrolled, {key}: {n}")
    for row in funnel["steps"]:
        lines.append(
            f"{row['version']:>3} {row['step'][:20]:<20} {row['kind']:<7} {row['entered']:>7} "
            f"{row['entered_control']:>6} {row['sent']:>5} {sum(row['suppressed'].values()):>5} "
            f"{row['opened']:>5} {row['clicked']:>5} {row['converted']:>5} "
            f"{sum(row['exited'].values()):>6}")
        lines += [f"      suppressed {k}: {n}" for k, n in row["suppressed"].items()]
        lines += [f"      exited {k}: {n}" for k, n in row["exited"].items()]
    return "\n".join(lines)
