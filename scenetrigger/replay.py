"""Replay: run a config's scenes over a recorded clickstream, in input order.

The clock moves only with the input; at the end, timers whose deadline is at
or after the clock are reported as pending (``advance_to`` may move it on).
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from config.models import AppConfig
from scenetrigger.sources import Record
from triggers.engine import Engine, PendingTimer
from triggers.errors import EventRejected
from triggers.events import Trigger

TriggerSink = Callable[[Trigger], None]


@dataclass
class ReplaySummary:
    events_read: int = 0
    events_taken: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    triggers: Counter[str] = field(default_factory=Counter)
    pending: list[PendingTimer] = field(default_factory=list)
    users: int = 0
    seconds: float = 0.0
    clock: int | None = None

    @property
    def events_per_second(self) -> float:
        return self.events_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_read": self.events_read,
            "events_taken": self.events_taken,
            "rejected": dict(self.rejected),
            "triggers": dict(self.triggers),
            "pending_timers": len(self.pending),
            "users": self.users,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.events_per_second),
            "clock": self.clock,
        }

    def render(self) -> str:
        lines = [
            f"events read     {self.events_read:>12,}",
            f"events taken    {self.events_taken:>12,}",
            f"rejected        {sum(self.rejected.values()):>12,}",
        ]
        lines += [f"  {reason:<14}{n:>12,}" for reason, n in sorted(self.rejected.items())]
        lines.append(f"triggers        {sum(self.triggers.values()):>12,}")
        lines += [f"  {scene:<30}{n:>8,}" for scene, n in self.triggers.items()]
        lines.append(f"pending timers  {len(self.pending):>12,}")
        lines.append(f"users           {self.users:>12,}")
        lines.append(f"elapsed         {self.seconds:>11.2f}s  ({self.events_per_second:,.0f} events/s)")
        return "\n".join(lines)


def new_engine(config: AppConfig) -> Engine:
    return Engine(config.scene_list(), limits=config.engine.limits())


def replay(
    records: Iterable[Record],
    engine: Engine,
    on_trigger: TriggerSink,
    on_reject: Callable[[int, EventRejected], None] | None = None,
    advance_to: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Feed every record to the engine; triggers go to ``on_trigger`` in firing order."""
    summary = ReplaySummary()
    for scene in engine.scenes:
        summary.triggers[scene.name] = 0
    started = time.perf_counter()
    handle = engine.handle
    counts = summary.triggers
    read = 0
    # Engine state is long-lived and free of reference cycles: freezing it
    # now and then keeps the cyclic GC from re-scanning every user's state
    # (that scan cost as much as the engine itself). Skipped if someone else
    # uses gc.freeze; everything is unfrozen at the end.
    freeze = gc.isenabled() and gc.get_freeze_count() == 0
    try:
        for number, item in records:
            read += 1
            if type(item) is EventRejected:
                summary.rejected[item.reason] += 1
                if on_reject is not None:
                    on_reject(number, item)
                continue
            for trig in handle(item):  # type: ignore[arg-type]
                counts[trig.scene] += 1
                on_trigger(trig)
            if not read & 0x3FFF:
                if freeze:
                    gc.freeze()
                if on_progress is not None:
                    on_progress(read)
    finally:
        if freeze:
            gc.unfreeze()
    final = engine.advance(engine.clock if advance_to is None else advance_to)
    for trig in final:
        counts[trig.scene] += 1
        on_trigger(trig)
    summary.events_read = read
    summary.events_taken = read - sum(summary.rejected.values())
    summary.pending = engine.pending_timers()
    summary.users = len(engine.store)
    summary.clock = engine.clock if summary.events_taken else None
    summary.seconds = time.perf_counter() - started
    return summary


def jsonl_trigger_writer(out: IO[bytes]) -> TriggerSink:
    """Write each trigger as one JSON line (``scene, user_id, key, ts``)."""
    write = out.write
    dumps = orjson.dumps

    def sink(trig: Trigger) -> None:
        write(dumps(trig.to_dict()) + b"\n")

    return sink


def jsonl_reject_writer(out: IO[bytes]) -> Callable[[int, EventRejected], None]:
    def sink(number: int, exc: EventRejected) -> None:
        out.write(orjson.dumps({"line": number, "reason": exc.reason, "detail": exc.detail}) + b"\n")

    return sink
