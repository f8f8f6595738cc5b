"""Sans-I/O scene engine: events and a clock in, triggers out.

Nothing in this package does I/O, reads the wall clock or imports asyncio,
so the same engine runs inside Faust, inside replay and inside property tests.
"""

from triggers.engine import Engine, PendingTimer
from triggers.errors import ConfigError, EventRejected, SceneTriggerError, StateDecodeError
from triggers.events import Event, Refusal, Trigger
from triggers.scenes import (
    AbsenceScene,
    ArrivalScene,
    Limits,
    RepeatScene,
    Scene,
    SequenceScene,
)

__all__ = [
    "AbsenceScene",
    "ArrivalScene",
    "ConfigError",
    "Engine",
    "Event",
    "EventRejected",
    "Limits",
    "PendingTimer",
    "Refusal",
    "RepeatScene",
    "Scene",
    "SceneTriggerError",
    "SequenceScene",
    "StateDecodeError",
    "Trigger",
]
