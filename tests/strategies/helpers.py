"""Factories for strategy tests: the shipped strategies, triggers and feedback."""

from __future__ import annotations

from typing import Any

from config.strategy_models import StrategyModel, load_strategy_file, resolve_include
from strategies.actions import Action, SendAction
from strategies.journeys import JourneyEngine
from strategies.model import Registry
from triggers.events import Event, Trigger

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_569_888_000_000  # 2019-10-01 00:00 UTC


def shipped() -> dict[str, StrategyModel]:
    return load_strategy_file(resolve_include("reactivation"))


def engine(models: dict[str, StrategyModel] | None = None, **kw: Any) -> JourneyEngine:
    return JourneyEngine(Registry(models if models is not None else shipped()), **kw)


def trigger(user: str, ts: int, scene: str = "repeat_view_no_purchase") -> Trigger:
    return Trigger(scene, user, "p1", ts)


def feedback(user: str, ts: int, kind: str, send: SendAction | None = None,
             channel: str | None = None) -> Event:
    fields: dict[str, Any] = {"type": kind, "user_id": user, "ts": ts}
    if send is not None:
        fields.update(message_id=send.message_id, channel=send.channel, strategy=send.strategy)
    if channel is not None:
        fields["channel"] = channel
    return Event(user, ts, kind, fields)


def sends(actions: list[Action]) -> list[SendAction]:
    return [a for a in actions if isinstance(a, SendAction)]


def kinds(actions: list[Action]) -> list[str]:
    return [a.kind for a in actions]
