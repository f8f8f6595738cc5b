"""Small builders shared by the per-kind unit tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from config.loader import validate_config
from triggers import Engine, Limits
from triggers.events import event_from_mapping

Fired = tuple[str, str, str | None, int]


def engine(scenes: dict[str, Any], limits: Limits | None = None) -> Engine:
    """An engine over scenes given in their config form (validated like a file)."""
    return Engine(validate_config({"scenes": scenes}).scene_list(), limits=limits)


def ev(user: str | int, ts: int, etype: str = "view", **fields: Any) -> dict[str, Any]:
    return {"user_id": user, "ts": ts, "type": etype, **fields}


def feed(eng: Engine, events: Iterable[dict[str, Any]]) -> list[list[Fired]]:
    """The triggers each event returned, one list per event."""
    out = []
    for raw in events:
        out.append([(t.scene, t.user_id, t.key, t.ts) for t in eng.handle(event_from_mapping(raw))])
    return out


def run(scenes: dict[str, Any], events: Iterable[dict[str, Any]]) -> list[Fired]:
    """Every trigger in firing order, replay-style (the clock stays at the last ts)."""
    eng = engine(scenes)
    fired = [t for batch in feed(eng, events) for t in batch]
    fired += [(t.scene, t.user_id, t.key, t.ts) for t in eng.advance(eng.clock)]
    return fired


def pending(eng: Engine) -> list[tuple[str, str, int]]:
    return [(p.scene, p.user_id, p.deadline) for p in eng.pending_timers()]
