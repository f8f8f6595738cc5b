"""Scenes of every kind, as the rest of the tree names them.

Each kind lives in its own module of :mod:`triggers.kinds` (scene, rule and
what the engine, hot reload and ``check-config`` ask of it); this module
re-exports them so ``from triggers.scenes import RepeatScene`` keeps working.
"""

from __future__ import annotations

from triggers.kinds.absence import AbsenceRule, AbsenceScene
from triggers.kinds.arrival import ArrivalRule, ArrivalScene
from triggers.kinds.base import NO_KEY, Limits, Rule, Scene
from triggers.kinds.date import DateRule, DateScene
from triggers.kinds.repeat import RepeatRule, RepeatScene
from triggers.kinds.replenishment import ReplenishmentRule, ReplenishmentScene
from triggers.kinds.sequence import SequenceRule, SequenceScene

__all__ = [
    "NO_KEY",
    "AbsenceRule",
    "AbsenceScene",
    "ArrivalRule",
    "ArrivalScene",
    "DateRule",
    "DateScene",
    "Limits",
    "RepeatRule",
    "RepeatScene",
    "ReplenishmentRule",
    "ReplenishmentScene",
    "Rule",
    "Scene",
    "SequenceRule",
    "SequenceScene",
]
