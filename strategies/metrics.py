"""Prometheus metrics of the journey host, on a registry the caller owns
(nothing registers at import)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from strategies.actions import (
    Action,
    EnrolAction,
    ExitAction,
    HandoffAction,
    SendAction,
    SuppressedAction,
)


@dataclass(frozen=True, slots=True)
class StrategyMetrics:
    registry: CollectorRegistry
    enrolments: Counter
    suppressed: Counter
    sends: Counter
    exits: Counter
    handoffs: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> StrategyMetrics:
        reg = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=reg,
            enrolments=Counter("scenetrigger_strategy_enrolments_total",
                               "Users entering a strategy, by group (treated/control)",
                               ["strategy", "version", "group"], registry=reg),
            suppressed=Counter("scenetrigger_strategy_suppressed_total",
                               "Entries not taken, by reason", ["strategy", "reason"],
                               registry=reg),
            sends=Counter("scenetrigger_strategy_sends_total", "Messages a strategy sent",
                          ["strategy", "step", "channel"], registry=reg),
            exits=Counter("scenetrigger_strategy_exits_total", "Users leaving a strategy",
                          ["strategy", "reason"], registry=reg),
            handoffs=Counter("scenetrigger_lead_handoffs_total",
                             "Leads handed to sales (threshold crossings)", ["channel"],
                             registry=reg),
        )

    def observe(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, EnrolAction):
                group = "control" if a.control else "treated"
                self.enrolments.labels(a.strategy, str(a.version), group).inc()
            elif isinstance(a, SuppressedAction):
                self.suppressed.labels(a.strategy, a.reason).inc()
            elif isinstance(a, SendAction):
                self.sends.labels(a.strategy, a.step, a.channel).inc()
            elif isinstance(a, ExitAction):
                self.exits.labels(a.strategy, a.reason).inc()
            elif isinstance(a, HandoffAction):
                self.handoffs.labels(a.channel).inc()
