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
import mmap
import multiprocessing
import os
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from config.clock import wall_ms
from config.models import AppConfig
from scenetrigger.sources import Format, Record, read_for
from triggers.engine import Engine, PendingTimer
from triggers.errors import EventRejected
from triggers.events import REASON_FUTURE_TS, Event, Refusal, Trigger
from triggers.host import IDENTIFY, EngineHost, TriggerSink, triggers_of
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
    """Whether any scene has a ``user`` filter (which reads the profile)."""
    return any(scene.user is not None for scene in scenes)


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
#
# Users are routed by the crc32 of their identity root: ids joined by an
# `identify` (anonymous id and known id, transitively) share one root, so
# their events meet in one shard, which runs the host's own identify rule.
# A JSONL line that starts `{"user_id":"…","ts":N` is routed from its bytes:
# another shard's line costs a regex match and a clock move, not a parse.
# Its owner parses it and checks the shortcut (same user, same ts, valid); a
# line where it was wrong (duplicate keys, invalid further on) makes
# `replay_sharded` fall back to one process: the output stays exact.

_END = 1 << 62  # the tag "record" of the timers fired by the final advance
Tagged = tuple[tuple[int, ...], str, str, "str | None", int]  # tag, scene, user, key, ts
_FAST = re.compile(rb'\{"user_id":"([^"\\]*)","ts":(-?[0-9]+)[,}]')


@dataclass(frozen=True, slots=True)
class ShardResult:
    triggers: list[Tagged]
    pending: list[tuple[tuple[int, int, int], str, str, int]]  # tag, scene, user, deadline
    read: int
    rejected: dict[str, int]  # the shard's own lines' (shard 0: also lines of no user)
    users: int
    clock: int  # the engine's (its start value if nothing moved it)
    refused: dict[str, int] = field(default_factory=dict)  # by the trigger budget
    shortcut_wrong: bool = False  # a line's byte routing was wrong: redo in one process


def _refusals_first(host: EngineHost, on_trigger: TriggerSink,
                    on_refusal: Callable[[Refusal], None]) -> TriggerSink:
    def sink(trig: Trigger) -> None:
        if host.engine.has_refusals:
            for refusal in host.take_refusals():
                on_refusal(refusal)
        on_trigger(trig)

    return sink


def identity_roots(host: EngineHost, events: Iterable[Event]) -> dict[str, str]:
    """Each id an ``identify`` joins to another (the host's rule for a usable
    known id), mapped to the root of its group: the smallest id in it."""
    parent: dict[str, str] = {}

    def find(uid: str) -> str:
        while (up := parent.get(uid, uid)) != uid:
            parent[uid] = uid = parent.get(up, up)
        return uid

    for event in events:
        if event.fields.get("type") == IDENTIFY and (known := host.known_id(event)):
            a, b = find(event.user_id), find(known)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {uid: find(uid) for uid in list(parent)}


def file_identity_roots(path: str, fmt: Format, host: EngineHost) -> dict[str, str]:
    """:func:`identity_roots` of a file without reading it all: only JSONL
    carries ``known_id``, and only lines holding ``identify`` or a ``\\u``
    escape can be an identify event (the host's reader decides which are)."""
    if fmt != "jsonl" or not os.path.getsize(path):
        return {}
    candidates: list[bytes] = []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        starts: set[int] = set()
        for needle in (b"identify", b"\\u"):
            at = data.find(needle)
            while at != -1:
                starts.add(data.rfind(b"\n", 0, at) + 1)
                at = data.find(needle, at + 1)
        for begin in sorted(starts):
            end = data.find(b"\n", begin)
            candidates.append(data[begin:end + 1 if end != -1 else len(data)])
    events = (item for _, item in read_for(host, candidates, "jsonl") if type(item) is Event)
    return identity_roots(host, events)


def replay_shard(
    records: Iterable[Record], target: EngineHost | Engine, shard: int, shards: int,
    advance_to: int | None = None, roots: Mapping[str, str] | None = None,
    now_ms: int | None = None, jsonl_lines: Iterable[bytes] | None = None,
) -> ShardResult:
    """One shard's part of a sharded replay: the users whose identity root
    (``roots``, default: found in ``records``) has ``crc32 % shards ==
    shard``, every record moving the clock. With ``jsonl_lines`` (raw JSONL
    lines, instead of ``records``) other shards' lines are skipped from their
    bytes. ``now_ms``: the wall clock of ``engine.max_future_event_clock``."""
    host = _host(target)
    engine = host.engine
    index = {scene.name: i for i, scene in enumerate(engine.scenes)}
    if roots is None:
        records = list(records)
        roots = identity_roots(host, (e for _, e in records if type(e) is Event))
    now = wall_ms() if now_ms is None else now_ms
    bound = host.max_future_ms
    timer_scenes = host.timer_scenes
    armed_at: dict[tuple[str, str], int] = {}  # (scene, user) -> record of the latest arming
    out: list[Tagged] = []
    rejected_before = host.counts.rejected.copy()
    refused_before = engine.budget_refused.copy()
    seq = engine.arm_count
    read = 0
    fast_ts: int | None = None  # the current line's ts, when it was routed from its bytes
    wrong = False
    crc32 = zlib.crc32

    def route(user_id: str) -> int:
        return crc32(roots.get(user_id, user_id).encode()) % shards

    def tag_timers(record: int, fired: list[Trigger]) -> None:
        for t in fired:
            arm = armed_at.pop((t.scene, t.user_id))
            out.append(((record, 0, t.ts, arm, index[t.scene]), t.scene, t.user_id, None, t.ts))

    def own_lines(lines: Iterable[bytes]) -> Iterator[bytes]:
        """The lines this shard must parse; another shard's lines move the clock."""
        nonlocal read, fast_ts
        match = _FAST.match
        by_bytes = {k.encode(): v.encode() for k, v in roots.items()}
        advance = host.advance
        for raw in lines:
            found = match(raw)
            if found is None:
                fast_ts = None
                yield raw
                continue
            user, ts = found.group(1, 2)
            fast_ts = int(ts)
            if crc32(by_bytes.get(user, user) if by_bytes else user) % shards == shard:
                yield raw
                continue
            read += 1  # another shard's record (one per JSONL line)
            if bound is not None and fast_ts - now > bound:
                continue  # rejected as future_ts (its owner counts it): no clock move
            if fast_ts > engine.clock:
                tag_timers(read, advance(fast_ts))

    if jsonl_lines is not None:
        records = read_for(host, own_lines(jsonl_lines), "jsonl")
    if bound is not None:  # see replay()
        records = host.bounded(records, now)
    freeze = gc.isenabled() and gc.get_freeze_count() == 0  # see replay()
    try:
        for _, item in records:
            read += 1  # the record's position: the same in every shard
            if freeze and not read & 0x3FF:
                gc.freeze()
            if type(item) is EventRejected:
                if fast_ts is not None:  # a line routed here by its bytes
                    wrong |= not (item.reason == REASON_FUTURE_TS and bound is not None
                                  and fast_ts - now > bound)
                    host.reject(item)
                elif shard == 0:  # a line of no user: counted once
                    host.reject(item)
                continue
            event: Any = item
            if fast_ts is not None and (event.ts != fast_ts or route(event.user_id) != shard):
                wrong = True  # the bytes said another user or time (duplicate keys)
            if route(event.user_id) != shard:
                tag_timers(read, host.advance(event.ts))
                continue
            fired = host.take(event)  # the host's identify and alias rules
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
    return ShardResult(out, pending, read, dict(rejected), len(engine.store), engine.clock,
                       dict(engine.budget_refused - refused_before), wrong)


# The config, handed to the forked shard processes by inheritance rather than
# pickled: the engine's classes, compiled (scripts/build-compiled.sh), do not
# unpickle (frozen dataclasses). So are the identity roots (possibly large).
_shard_config: AppConfig | None = None
_shard_roots: dict[str, str] = {}


def _run_shard(path: str, fmt: Format, shard: int, shards: int,
               advance_to: int | None, now_ms: int) -> ShardResult:
    config = _shard_config
    assert config is not None, "a shard runs in a process forked by replay_sharded"
    # Shards report triggers only: profiles only for scenes' user filters.
    host = new_host(config, profiles=False)
    with open(path, "rb", buffering=1 << 20) as fh:
        if fmt == "jsonl":
            return replay_shard((), host, shard, shards, advance_to, _shard_roots, now_ms, fh)
        return replay_shard(read_for(host, fh, fmt), host, shard, shards, advance_to,
                            _shard_roots, now_ms)


def replay_sharded(
    path: str, fmt: Format, config: AppConfig, shards: int, on_trigger: TriggerSink,
    advance_to: int | None = None,
) -> ReplaySummary:
    """`replay` of a file in ``shards`` processes: the same triggers in the
    same order, the same pending timers and counts (rejects are not passed
    on one by one)."""
    global _shard_config, _shard_roots
    started = time.perf_counter()
    now = wall_ms()  # one wall clock for every shard (engine.max_future_event_clock)
    context = multiprocessing.get_context("fork")
    _shard_config = config  # before the pool forks its processes
    _shard_roots = file_identity_roots(path, fmt, new_host(config, profiles=False))
    try:
        with ProcessPoolExecutor(shards, mp_context=context) as pool:
            futures = [pool.submit(_run_shard, path, fmt, k, shards, advance_to, now)
                       for k in range(shards)]
            results = [f.result() for f in futures]
    finally:
        _shard_config, _shard_roots = None, {}
    if any(r.shortcut_wrong for r in results):
        log.warning("sharded replay: a line's byte routing was wrong; replaying in one process")
        host = new_host(config, profiles=False)
        with open(path, "rb", buffering=1 << 20) as fh:
            summary = replay(read_for(host, fh, fmt), host, on_trigger, advance_to=advance_to)
        summary.seconds = time.perf_counter() - started
        return summary
    summary = ReplaySummary()
    for each in config.scene_list():
        summary.triggers[each.name] = 0
    for _, scene, user_id, key, ts in heapq.merge(*(r.triggers for r in results),
                                                  key=lambda t: t[0]):
        summary.triggers[scene] += 1
        on_trigger(Trigger(scene, user_id, key, ts))
    summary.events_read = results[0].read  # every shard counts every record
    for r in results:
        summary.rejected.update(r.rejected)
        summary.refused.update(r.refused)
    summary.events_taken = summary.events_read - sum(summary.rejected.values())
    pending = sorted((p for r in results for p in r.pending), key=lambda p: p[0])
    summary.pending = [PendingTimer(scene, user_id, deadline)
                       for _, scene, user_id, deadline in pending]
    summary.users = sum(r.users for r in results)
    summary.clock = max(r.clock for r in results) if summary.events_taken else None
    summary.seconds = time.perf_counter() - started
    return summary
