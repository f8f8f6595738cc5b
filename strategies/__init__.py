"""Strategies: multi-step journeys, tags, lead scoring, control groups and
attribution. Sans-I/O like :mod:`triggers`: triggers, feedback events and an
explicit clock in, actions out. Stores with I/O (Redis) sit behind Protocols.
"""

from strategies.actions import (
    Action,
    EnrolAction,
    ExitAction,
    HandoffAction,
    ScoreAction,
    SendAction,
    SuppressedAction,
    TagAction,
    UserContext,
)
from strategies.journeys import JourneyEngine
from strategies.model import Registry, Strategy

__all__ = [
    "Action",
    "EnrolAction",
    "ExitAction",
    "HandoffAction",
    "JourneyEngine",
    "Registry",
    "ScoreAction",
    "SendAction",
    "Strategy",
    "SuppressedAction",
    "TagAction",
    "UserContext",
]
