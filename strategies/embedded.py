"""Strategies in the embedded runtime (``scenetrigger demo``): a subscriber
that takes each fired trigger, runs the journeys on the runtime's simulated
clock and reports their actions. Wire it with
``runtime.subscribe(JourneySubscriber(config, printer))``.

The demo publishes a record per trigger (and per timer/release), so journey
deadlines fire when the next record arrives; ``tick(now_ms)`` lets a host
advance them without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from config.models import AppConfig
from strategies.actions import Action, UserContext
from strategies.journeys import JourneyEngine
from strategies.metrics import StrategyMetrics
from strategies.model import Registry

ActionSink = Callable[[Action], None]


class JourneySubscriber:
    def __init__(self, config: AppConfig, sink: ActionSink,
                 metrics: StrategyMetrics | None = None) -> None:
        section = config.strategies
        self.engine = JourneyEngine(
            Registry(section.all_journeys(),
                     scenes=frozenset(s.name for s in config.scene_list())),
            control=section.control)
        self.sink = sink
        self.metrics = metrics
        self.actions = 0

    def __call__(self, record: Any) -> None:
        """``record`` is a ``scenetrigger.embedded.TriggerRecord``."""
        self._emit(self.engine.advance(record.fired_ms))
        if record.via != "release":  # a released message is not a new trigger
            self._emit(self.engine.on_trigger(record.trigger, UserContext()))

    def tick(self, now_ms: int) -> None:
        self._emit(self.engine.advance(now_ms))

    def _emit(self, actions: list[Action]) -> None:
        if self.metrics is not None:
            self.metrics.observe(actions)
        for action in actions:
            self.actions += 1
            self.sink(action)
