"""Replay: run a config's scenes over a recorded clickstream, in input order.

An adapter over :class:`triggers.host.EngineHost` (event clock): records
from the file readers (read with the host's input rules) in, triggers to a
sink, a summary of the host's counts out. The clock moves only with the
input; at the end, timers whose deadline is at or after the clock are
reported as pending (``advance_to`` may move it on).
"""

from __future__ import annotations

import gc
import heapq
import logging
import multiprocessing
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from config.clock import wall_ms
from config.models import AppConfig
from scenetrigger.sources import Format, Record, read_for
from triggers.engine import Engine, PendingTimer
from triggers.errors import EventRejected
from triggers.events import Event, Refusal, Trigger
from triggers.host import IDENTITY_TYPES, EngineHost, TriggerSink, triggers_of
from triggers.kinds import kind_of
from triggers.merge import ADMIN_MERGE
from triggers.scenes import Scene

log = logging.getLogger("scenetrigger.replay")


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
    return EngineHost(scenes, config.engine.limits(), config.engine.input_rules(),
                      track_profile=profiles or filters_users(scenes))


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


# -- sharded replay -------------------------------------------------------------
#
# `repeat` and `arrival` depend only on a user's own events and `absence` only
# on the clock, so each of N processes can read the whole input, move its clock
# on every record and apply only its own users' events. Every trigger is tagged
# with where the single-process engine would emit it: before record n, timers
# in (deadline, arming record, scene index) order, then record n's own
# triggers in config order. Records, not lines: an OTTO line holds many events.
# Merging on that tag gives exactly the output of `replay`.

_END = 1 << 62  # the tag "record" of the timers fired by the final advance
Tagged = tuple[tuple[int, ...], str, str, "str | None", int]  # tag, scene, user, key, ts


@dataclass(frozen=True, slots=True)
class ShardResult:
    triggers: list[Tagged]
    pending: list[tuple[tuple[int, int, int], str, str, int]]  # tag, scene, user, deadline
    read: int
    rejected: dict[str, int]
    users: int
    clock: int | None


def _refusals_first(host: EngineHost, on_trigger: TriggerSink,
                    on_refusal: Callable[[Refusal], None]) -> TriggerSink:
    def sink(trig: Trigger) -> None:
        if host.engine.has_refusals:
            for refusal in host.take_refusals():
                on_refusal(refusal)
        on_trigger(trig)

    return sink


def replay_shard(
    records: Iterable[Record], target: EngineHost | Engine, shard: int, shards: int,
    advance_to: int | None = None,
) -> ShardResult:
    """One shard's part of a sharded replay: the users with
    ``crc32(user_id) % shards == shard``, every line moving the clock."""
    host = _host(target)
    engine = host.engine
    index = {scene.name: i for i, scene in enumerate(engine.scenes)}
    if host.max_future_ms is not None:  # see replay()
        records = host.bounded(records, wall_ms())
    timer_scenes = host.timer_scenes
    armed_at: dict[tuple[str, str], int] = {}  # (scene, user) -> record of the latest arming
    out: list[Tagged] = []
    rejected_before = host.counts.rejected.copy()
    seq = engine.arm_count
    read = 0

    def tag_timers(record: int, fired: list[Trigger]) -> None:
        for t in fired:
            arm = armed_at.pop((t.scene, t.user_id))
            out.append(((record, 0, t.ts, arm, index[t.scene]), t.scene, t.user_id, None, t.ts))

    freeze = gc.isenabled() and gc.get_freeze_count() == 0  # see replay()
    try:
        for _, item in records:
            read += 1  # the record's position: the same in every shard
            if freeze and not read & 0x3FF:
                gc.freeze()
            if type(item) is EventRejected:
                host.reject(item)
                continue
            event: Any = item
            if event.fields.get("type") in IDENTITY_TYPES:
                if _identify_in_shard(host, event, shard, shards):
                    tag_timers(read, host.advance(event.ts))
                    continue
            elif host.aliases:
                event = host.resolve(event)
            if zlib.crc32(event.user_id.encode()) % shards != shard:
                tag_timers(read, host.advance(event.ts))
                continue
            fired = host.take(event)
            timers = [t for t in fired if t.scene in timer_scenes]  # timers come first
            tag_timers(read, timers)
            out.extend(((read, 1, index[t.scene]), t.scene, t.user_id, t.key, t.ts)
                       for t in fired[len(timers):])
            if engine.arm_count != seq:  # this event armed timers: remember where
                old, seq = seq, engine.arm_count
                owner = host.aliases.get(event.user_id, event.user_id)  # an identify: K
                state = engine.store.get(owner)
                assert state is not None
                for name, (_, arm_seq) in state.absence.items():
                    if arm_seq > old:
                        armed_at[(name, owner)] = read
    finally:
        if freeze:
            gc.unfreeze()
    tag_timers(_END, host.advance(engine.clock if advance_to is None else advance_to))
    pending = [((p.deadline, armed_at[(p.scene, p.user_id)], index[p.scene]), p.scene,
                p.user_id, p.deadline) for p in engine.pending_timers()]
    rejected = host.counts.rejected - rejected_before
    taken = read > sum(rejected.values())
    return ShardResult(out, pending, read, dict(rejected), len(engine.store),
                       engine.clock if taken else None)


def _identify_in_shard(host: EngineHost, event: Event, shard: int, shards: int) -> bool:
    """An identify event in a sharded replay. Every shard keeps the alias (it
    routes the anonymous id's later events to the known user's shard). Only a
    shard holding both ids merges (False: the caller takes the event); when
    they fall in different shards the anonymous id's state before the
    identify is dropped, not merged (docs/semantics-notes.md, "Identity")."""
    try:  # every shard sees every statement: the same aliases and known users in each
        known = host.identity_target(event)
    except EventRejected:
        return True
    mine = [zlib.crc32(uid.encode()) % shards == shard for uid in (event.user_id, known)]
    if all(mine):
        return False
    state = host.detach(event.user_id, known)
    host.note_merged(known, event.user_id)
    if event.type == ADMIN_MERGE:
        host.repoint(event.user_id, known)
    if state is not None:
        log.warning("identify across shards: the anonymous id's earlier state is not merged",
                    extra={"user_id": event.user_id, "shard": shard})
    return True


# The config, handed to the forked shard processes by inheritance rather than
# pickled: the engine's classes, compiled (scripts/build-compiled.sh), do not
# unpickle (frozen dataclasses).
_shard_config: AppConfig | None = None


def _run_shard(path: str, fmt: Format, shard: int, shards: int,
               advance_to: int | None) -> ShardResult:
    config = _shard_config
    assert config is not None, "a shard runs in a process forked by replay_sharded"
    # Shards report triggers only: profiles only for scenes' user filters.
    host = new_host(config, profiles=False)
    with open(path, "rb", buffering=1 << 20) as fh:
        return replay_shard(read_for(host, fh, fmt), host, shard, shards, advance_to)


def replay_sharded(
    path: str, fmt: Format, config: AppConfig, shards: int, on_trigger: TriggerSink,
    advance_to: int | None = None,
) -> ReplaySummary:
    """`replay` of a file in ``shards`` processes: the same triggers in the
    same order, the same pending timers and counts (rejects are not passed
    on one by one)."""
    global _shard_config
    started = time.perf_counter()
    context = multiprocessing.get_context("fork")
    _shard_config = config  # before the pool forks its processes
    try:
        with ProcessPoolExecutor(shards, mp_context=context) as pool:
            futures = [pool.submit(_run_shard, path, fmt, k, shards, advance_to)
                       for k in range(shards)]
            results = [f.result() for f in futures]
    finally:
        _shard_config = None
    summary = ReplaySummary()
    for each in config.scene_list():
        summary.triggers[each.name] = 0
    for _, scene, user_id, key, ts in heapq.merge(*(r.triggers for r in results),
                                                  key=lambda t: t[0]):
        summary.triggers[scene] += 1
        on_trigger(Trigger(scene, user_id, key, ts))
    first = results[0]  # every shard reads every line
    summary.events_read = first.read
    summary.rejected = Counter(first.rejected)
    summary.events_taken = first.read - sum(first.rejected.values())
    pending = sorted((p for r in results for p in r.pending), key=lambda p: p[0])
    summary.pending = [PendingTimer(scene, user_id, deadline)
                       for _, scene, user_id, deadline in pending]
    summary.users = sum(r.users for r in results)
    summary.clock = first.clock
    summary.seconds = time.perf_counter() - started
    return summary
