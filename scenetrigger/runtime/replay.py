"""Replay: run a config's scenes over a recorded clickstream, in input order.

An adapter over :class:`triggers.host.EngineHost` (event clock): records
from the file readers (read with the host's input rules) in, triggers to a
sink, a summary of the host's counts out. The clock moves only with the
input; at the end, timers whose deadline is at or after the clock are
reported as pending (``advance_to`` may move it on).
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from config.clock import wall_ms
from config.models import AppConfig
from scenetrigger.runtime.sources import Record
from triggers.engine import Engine, PendingTimer
from triggers.errors import EventRejected
from triggers.events import Refusal, Trigger
from triggers.host import EngineHost, TriggerSink, triggers_of
from triggers.kinds import kind_of
from triggers.scenes import Scene

log = logging.getLogger("scenetrigger.runtime.replay")


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
    refused: Counter[str] = field(default_factory=Counter)  # by the trigger budget, per scene
    # A sharded replay's CPU seconds in each shard process (not in to_dict:
    # the summary is the same however many processes ran it).
    shard_cpu: list[float] = field(default_factory=list)

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
        } | ({"refused_by_budget": dict(self.refused)} if self.refused else {})

    def render(self) -> str:
        lines = [
            f"events read     {self.events_read:>12,}",
            f"events taken    {self.events_taken:>12,}",
            f"rejected        {sum(self.rejected.values()):>12,}",
        ]
        lines += [f"  {reason:<14}{n:>12,}" for reason, n in sorted(self.rejected.items())]
        lines.append(f"triggers        {sum(self.triggers.values()):>12,}")
        lines += [f"  {scene:<30}{n:>8,}" for scene, n in self.triggers.items()]
        if self.refused:
            lines.append(f"over the budget {sum(self.refused.values()):>12,}  "
                         "(engine.max_triggers_per_user: refused, not sent)")
            lines += [f"  {scene:<30}{n:>8,}" for scene, n in self.refused.items()]
        lines.append(f"pending timers  {len(self.pending):>12,}")
        lines.append(f"users           {self.users:>12,}")
        lines.append(f"elapsed         {self.seconds:>11.2f}s  ({self.events_per_second:,.0f} events/s)")
        return "\n".join(lines)


def new_host(config: AppConfig, profiles: bool = True) -> EngineHost:
    """The config's engine host (event clock, the config's input rules).
    ``profiles``: whether the runtime reads the per-user profile aggregates
    (content selection, delivery, trigger records); one that only reports
    triggers passes False and saves their upkeep on every event. Scenes with
    a ``user`` filter read them, so they keep them on."""
    scenes = config.scene_list()
    host = EngineHost(scenes, config.engine.limits(), config.engine.input_rules(),
                      track_profile=profiles or filters_users(scenes) or bool(config.audiences))
    # Audiences read the profiles too; their changes wait in the tracker's
    # pending list until the runtime sets a sink (docs/ads.md).
    host.audiences = config.audience_tracker(host.engine.store)
    return host


def new_engine(config: AppConfig, profiles: bool = True) -> Engine:
    """The engine of :func:`new_host` (for tests and benchmarks that drive it)."""
    return new_host(config, profiles).engine


def _host(target: EngineHost | Engine) -> EngineHost:
    """Records reach replay decoded: an engine alone needs no input rules."""
    return target if isinstance(target, EngineHost) else EngineHost.around(target)


def filters_users(scenes: Iterable[Scene]) -> bool:
    """Whether any scene reads the profile: a ``user`` filter, or its kind's rule."""
    return any(scene.user is not None or kind_of(scene).reads_profile for scene in scenes)


def replay(
    records: Iterable[Record],
    target: EngineHost | Engine,
    on_trigger: TriggerSink,
    on_reject: Callable[[int, EventRejected], None] | None = None,
    advance_to: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_refusal: Callable[[Refusal], None] | None = None,
) -> ReplaySummary:
    """Feed every record to the host; triggers go to ``on_trigger`` in firing
    order; ``on_refusal`` gets the engine's refusals (user filters, the
    trigger budget) in the order they happened, each before the next trigger."""
    host = _host(target)
    engine = host.engine
    counts = host.counts
    refused_before = engine.budget_refused.copy()
    if on_refusal is not None:
        on_trigger = _refusals_first(host, on_trigger, on_refusal)
    if host.max_future_ms is not None:  # engine.max_future_event_clock: the wall clock now
        records = host.bounded(records, wall_ms())
    before = dict(counts.triggers)
    taken_before, rejected_before = counts.taken, counts.rejected.copy()
    started = time.perf_counter()
    # Engine state is long-lived and free of reference cycles: freezing it
    # now and then keeps the cyclic GC from re-scanning every user's state
    # (that scan cost as much as the engine itself). Skipped if someone else
    # uses gc.freeze; everything is unfrozen at the end.
    freeze = gc.isenabled() and gc.get_freeze_count() == 0

    def every_1024(read: int) -> None:
        if freeze:  # cheap (list splices): often enough that no scan grows big
            gc.freeze()
        if on_refusal is not None:  # before the engine's bound on pending refusals
            for refusal in host.take_refusals():
                on_refusal(refusal)
        if on_progress is not None and not read & 0x3FFF:
            on_progress(read)

    try:
        read = host.feed(records, on_trigger, on_reject,
                         every_1024 if freeze or on_progress is not None
                         or on_refusal is not None else None)
    finally:
        if freeze:
            gc.unfreeze()
    for trig in host.advance(engine.clock if advance_to is None else advance_to):
        on_trigger(trig)
    if host.audiences is not None:
        host.audiences.flush()
    if on_refusal is not None:
        for refusal in host.take_refusals():
            on_refusal(refusal)
    summary = ReplaySummary()
    summary.refused = engine.budget_refused - refused_before
    summary.triggers = triggers_of(counts.triggers, before)
    summary.rejected = counts.rejected - rejected_before
    summary.events_read = read
    summary.events_taken = counts.taken - taken_before
    summary.pending = engine.pending_timers()
    summary.users = len(engine.store)
    summary.clock = engine.clock if summary.events_taken else None
    summary.seconds = time.perf_counter() - started
    return summary


def trigger_line(trig: Trigger) -> bytes:
    """A trigger as replay writes it: one JSON line (``scene, user_id, key, ts``)."""
    return orjson.dumps(trig.to_dict()) + b"\n"


def jsonl_trigger_writer(out: IO[bytes]) -> TriggerSink:
    """Write each trigger as its :func:`trigger_line`."""
    write = out.write

    def sink(trig: Trigger) -> None:
        write(trigger_line(trig))

    return sink


def jsonl_reject_writer(out: IO[bytes]) -> Callable[[int, EventRejected], None]:
    def sink(number: int, exc: EventRejected) -> None:
        out.write(orjson.dumps({"line": number, "reason": exc.reason, "detail": exc.detail}) + b"\n")

    return sink


def _refusals_first(host: EngineHost, on_trigger: TriggerSink,
                    on_refusal: Callable[[Refusal], None]) -> TriggerSink:
    def sink(trig: Trigger) -> None:
        if host.engine.has_refusals:
            for refusal in host.take_refusals():
                on_refusal(refusal)
        on_trigger(trig)

    return sink
