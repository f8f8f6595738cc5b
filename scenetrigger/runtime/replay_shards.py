"""Sharded replay: `replay` of a file in N processes, the same output.

``scenetrigger replay --jobs N`` runs it; :func:`replay_shard` is one
process's part (also run in-process by the tests).
"""

from __future__ import annotations

import gc
import heapq
import logging
import mmap
import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from multiprocessing.connection import Connection
from typing import IO, Any

from config.clock import wall_ms
from config.models import AppConfig
from scenetrigger.runtime.replay import (
    ReplaySummary,
    _host,
    new_host,
    replay,
    trigger_line,
)
from scenetrigger.runtime.replay_scan import (
    ClockLine,
    OwnRecord,
    Router,
    Scanner,
    jsonl_own,
    native_scanner,
    parsed_own,
    scan_py,
)
from scenetrigger.runtime.sources import Format, Record, read_for
from triggers.engine import Engine, PendingTimer
from triggers.errors import EventRejected
from triggers.events import Event, Trigger
from triggers.host import IDENTITY_TYPES, EngineHost, TriggerSink

log = logging.getLogger("scenetrigger.runtime.replay")


# -- sharded replay -------------------------------------------------------------
#
# `repeat` and `arrival` depend only on a user's own events and `absence` only
# on the clock, so each of N processes can read the whole input and apply
# only its own users' events. Every trigger is tagged with where the
# single-process engine would emit it: before record n, timers in (deadline,
# arming record, scene index) order, then record n's own triggers in config
# order. Records, not lines: an OTTO line holds many events. Merging on that
# tag gives exactly the output of `replay`.
#
# A shard does not move its engine's clock on other users' records: it keeps
# the clock after every record (replay_scan.ClockLine), moves its engine to
# it before each of its own events, and finds where each timer fired in the
# one-process run from its deadline and arming (ClockLine.fired_at).
#
# Users are routed by the crc32 of their identity root: ids joined by an
# `identify` (anonymous id and known id, transitively) share one root, so
# their events meet in one shard, which runs the host's own identify rule.
# A JSONL line that starts `{"user_id":"…","ts":N` (and repeats neither key)
# is read from its bytes (replay_scan: a C scanner, or its Python twin):
# another shard's line costs no parse and no Python. Its owner parses it; a
# line that does not parse (invalid further on, too long) makes
# `replay_sharded` fall back to one process: the output stays exact.

Tagged = tuple[tuple[Any, ...], str, str, "str | None", int]  # tag, scene, user, key, ts


@dataclass(frozen=True, slots=True)
class ShardResult:
    triggers: list[Tagged]
    pending: list[tuple[tuple[Any, ...], str, str, int]]  # tag, scene, user, deadline
    read: int
    rejected: dict[str, int]  # the shard's own lines' (shard 0: also lines of no user)
    users: int
    clock: int  # the engine's (its start value if nothing moved it)
    refused: dict[str, int] = field(default_factory=dict)  # by the trigger budget
    shortcut_wrong: bool = False  # a line's byte routing was wrong: redo in one process
    # With replay_sharded's `write`: the triggers as (tag, line), rendered by
    # the shard (`triggers` is then empty), and how many per scene.
    lines: list[tuple[tuple[Any, ...], bytes]] = field(default_factory=list)
    fired: dict[str, int] = field(default_factory=dict)
    cpu: float = 0.0  # the shard process's CPU seconds


def identity_roots(host: EngineHost, events: Iterable[Event]) -> dict[str, str]:
    """Each id an ``identify`` joins to another (the host's rule for a usable
    known id), mapped to the root of its group: the smallest id in it."""
    parent: dict[str, str] = {}

    def find(uid: str) -> str:
        while (up := parent.get(uid, uid)) != uid:
            parent[uid] = uid = parent.get(up, up)
        return uid

    for event in events:
        if event.fields.get("type") in IDENTITY_TYPES and (known := host.known_id(event)):
            a, b = find(event.user_id), find(known)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {uid: find(uid) for uid in list(parent)}


def file_identity_roots(path: str, fmt: Format, host: EngineHost) -> dict[str, str]:
    """:func:`identity_roots` of a file without reading it all: only JSONL
    carries ``known_id``, and only lines holding ``identify``, ``merge_users``
    (an admin merge) or a ``\\u`` escape can be an identity event (the host's
    reader decides which are)."""
    if fmt != "jsonl" or not os.path.getsize(path):
        return {}
    candidates: list[bytes] = []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        starts: set[int] = set()
        for needle in (*(t.encode() for t in sorted(IDENTITY_TYPES)), b"\\u"):
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
    now_ms: int | None = None, jsonl: IO[bytes] | None = None, scan: Scanner | None = None,
) -> ShardResult:
    """One shard's part of a sharded replay: the users whose identity root
    (``roots``, default: found in ``records``) has ``crc32 % shards ==
    shard``, each timer tagged where the one-process engine fires it. With
    ``jsonl`` (a binary JSONL stream, instead of ``records``) other shards'
    lines are read from their bytes by ``scan`` (default: the C scanner if
    built, else the Python one). ``now_ms``: the wall clock of
    ``engine.max_future_event_clock``."""
    host = _host(target)
    engine = host.engine
    index = {scene.name: i for i, scene in enumerate(engine.scenes)}
    if roots is None:
        records = list(records)
        roots = identity_roots(host, (e for _, e in records if type(e) is Event))
    now = wall_ms() if now_ms is None else now_ms
    bound = host.max_future_ms
    timer_scenes = host.timer_scenes
    router = Router(shard, shards, roots)
    line = ClockLine(engine.clock)
    fired_at = line.fired_at
    # (scene, user) -> where the latest arming sorts among armings: (record, 1)
    # for an event's, the fire's tag (record, 0, ...) for a next period armed as
    # a timer fired (before the record's event applies, in firing order).
    armed_at: dict[tuple[str, str], tuple[Any, ...]] = {}
    rearmed: dict[tuple[str, str], int] = {}  # the arm seq of such a next period
    out: list[Tagged] = []
    rejected_before = host.counts.rejected.copy()
    refused_before = engine.budget_refused.copy()
    seq = engine.arm_count
    wrong = False

    periodic = engine.periodic_scenes
    if periodic:
        engine.periodic_log = []

    def tag_timers(fired: list[Trigger]) -> None:
        for t in fired:
            if t.scene in periodic:
                continue  # tagged from the engine's log below, refused ones too
            arm = armed_at.pop((t.scene, t.user_id))
            out.append(((fired_at(t.ts, arm), 0, t.ts, arm, index[t.scene]), t.scene,
                        t.user_id, None, t.ts))
        if periodic:
            tag_periods()

    def tag_periods() -> None:
        """A consumed periodic timer (fired or refused) arms its next period
        then, in firing order: that arming sorts as the fire does."""
        log = engine.periodic_log
        assert log is not None
        for scene, user, deadline, given, armed in log:
            key = (scene, user)
            arm = armed_at.pop(key)
            tag = (fired_at(deadline, arm), 0, deadline, arm, index[scene])
            if given:
                out.append((tag, scene, user, None, deadline))
            if armed is not None:
                armed_at[key] = tag
                rearmed[key] = armed
        log.clear()

    own: Iterable[OwnRecord]
    if jsonl is not None:
        own = chain.from_iterable(jsonl_own(jsonl, host, line, router, now, bound,
                                            scan or native_scanner() or scan_py))
    else:
        own = parsed_own(records, line, router, now, bound)
    clocks = line.clocks
    freeze = gc.isenabled() and gc.get_freeze_count() == 0  # see replay()
    aliases = host.aliases  # the same dict all along (host.detach fills it)
    handle = engine.handle
    advance = engine.advance  # the host's counts are not reported by a shard
    taken = 0
    try:
        for read, (_, item), read_ts in own:
            if type(item) is EventRejected:
                wrong |= read_ts is not None  # a line read from its bytes must parse
                host.reject(item)
                continue
            taken += 1
            if freeze and not taken & 0x3FF:
                gc.freeze()
            event: Any = item
            # Other users' records moved the clock to `before`: a late event
            # must find the timers due by then fired (else handle() does it).
            before = clocks[read - 1]
            if before > event[1] and before > engine.clock and (
                    (fired := advance(before)) or periodic):
                tag_timers(fired)
            if aliases or event.fields.get("type") in IDENTITY_TYPES:
                fired = host.take(event)  # the host's identify and alias rules
            else:
                fired = handle(event)  # as EngineHost.feed does
            if fired:
                timers = [t for t in fired if t.scene in timer_scenes]  # timers come first
                tag_timers(timers)
                out.extend(((read, 1, index[t.scene]), t.scene, t.user_id, t.key, t.ts)
                           for t in fired[len(timers):])
            elif periodic:
                tag_periods()
            if engine.arm_count != seq:  # this event armed timers: remember where
                old, seq = seq, engine.arm_count
                owner = host.aliases.get(event.user_id, event.user_id)  # an identify: K
                state = engine.store.get(owner)
                assert state is not None
                for name, (_, arm_seq) in state.timer.items():
                    if arm_seq > old and rearmed.get((name, owner)) != arm_seq:
                        armed_at[(name, owner)] = (read, 1)
    finally:
        if freeze:
            gc.unfreeze()
    tag_timers(advance(clocks[-1]))  # due before the last record: fired where they were
    tag_timers(host.advance(engine.clock if advance_to is None else advance_to))
    pending = [((p.deadline, armed_at[(p.scene, p.user_id)], index[p.scene]), p.scene,
                p.user_id, p.deadline) for p in engine.pending_timers()]
    rejected = host.counts.rejected - rejected_before
    return ShardResult(out, pending, line.read, dict(rejected), len(engine.store), engine.clock,
                       dict(engine.budget_refused - refused_before), wrong)


# The config, handed to the forked shard processes by inheritance rather than
# pickled: the engine's classes, compiled (scripts/build-compiled.sh), do not
# unpickle (frozen dataclasses). So are the identity roots (possibly large).
_shard_config: AppConfig | None = None
_shard_roots: dict[str, str] = {}
_kept: list[EngineHost] = []


def _rendered(result: ShardResult) -> ShardResult:
    """The result with its triggers as the lines ``replay`` writes."""
    lines = [(tag, trigger_line(Trigger(scene, user, key, ts)))
             for tag, scene, user, key, ts in result.triggers]
    fired = Counter(scene for _, scene, _, _, _ in result.triggers)
    return replace(result, triggers=[], lines=lines, fired=dict(fired))


def _run_shard(path: str, fmt: Format, shard: int, shards: int,
               advance_to: int | None, now_ms: int, scan: Scanner | None) -> ShardResult:
    config = _shard_config
    assert config is not None, "a shard runs in a process forked by replay_sharded"
    # Shards report triggers only: profiles only for scenes' user filters.
    host = new_host(config, profiles=False)
    # Kept: the process exits without freeing it (a second of teardown per million users).
    _kept.append(host)
    with open(path, "rb", buffering=1 << 20) as fh:
        if fmt == "jsonl":
            return replay_shard((), host, shard, shards, advance_to, _shard_roots, now_ms, fh,
                                scan)
        return replay_shard(read_for(host, fh, fmt), host, shard, shards, advance_to,
                            _shard_roots, now_ms)


def _shard_process(conn: Connection, path: str, fmt: Format, shard: int, shards: int,
                   advance_to: int | None, now_ms: int, scan: Scanner | None,
                   render: bool) -> None:
    try:
        result = _run_shard(path, fmt, shard, shards, advance_to, now_ms, scan)
        result = _rendered(result) if render else result
        answer: ShardResult | str = replace(result, cpu=time.process_time())
    except BaseException:
        answer = traceback.format_exc()
    conn.send(answer)
    conn.close()


def replay_sharded(
    path: str, fmt: Format, config: AppConfig, shards: int, on_trigger: TriggerSink | None,
    advance_to: int | None = None, scan: Scanner | None = None,
    write: Callable[[bytes], object] | None = None,
) -> ReplaySummary:
    """`replay` of a file in ``shards`` processes: the same triggers in the
    same order, the same pending timers and counts (rejects are not passed
    on one by one). The triggers go to ``on_trigger``, or with ``write`` as
    their :func:`~scenetrigger.runtime.replay.trigger_line`, rendered by the
    shards, in one call. ``scan``: the JSONL line
    scanner (default: the C one if built, else the Python one)."""
    if (on_trigger is None) == (write is None):
        raise ValueError("replay_sharded: give on_trigger or write")
    global _shard_config, _shard_roots
    started = time.perf_counter()
    now = wall_ms()  # one wall clock for every shard (engine.max_future_event_clock)
    context = multiprocessing.get_context("fork")
    _shard_config = config  # before the pool forks its processes
    _shard_roots = file_identity_roots(path, fmt, new_host(config, profiles=False))
    try:
        # One process per shard (a pool may hand one process two shards).
        pipes = [context.Pipe(duplex=False) for _ in range(shards)]
        procs = [context.Process(target=_shard_process, daemon=True,
                                 args=(sender, path, fmt, k, shards, advance_to, now, scan,
                                       write is not None))
                 for k, (_, sender) in enumerate(pipes)]
        for proc in procs:
            proc.start()
        for _, sender in pipes:
            sender.close()
        try:
            answers = [receiver.recv() for receiver, _ in pipes]
        except EOFError:
            raise RuntimeError("sharded replay: a shard process died") from None
        finally:
            for proc in procs:
                proc.join()
    finally:
        _shard_config, _shard_roots = None, {}
    results: list[ShardResult] = []
    for answer in answers:
        if not isinstance(answer, ShardResult):
            raise RuntimeError(f"sharded replay: a shard failed: {answer}")
        results.append(answer)
    if any(r.shortcut_wrong for r in results):
        log.warning("sharded replay: a line's byte routing was wrong; replaying in one process")
        host = new_host(config, profiles=False)
        sink = on_trigger or _line_sink(write)
        with open(path, "rb", buffering=1 << 20) as fh:
            summary = replay(read_for(host, fh, fmt), host, sink, advance_to=advance_to)
        summary.seconds = time.perf_counter() - started
        return summary
    summary = ReplaySummary()
    for each in config.scene_list():
        summary.triggers[each.name] = 0
    # tags are unique, so tuples compare on their tags alone
    if write is not None:
        write(b"".join([line for _, line in sorted(chain.from_iterable(
            r.lines for r in results))]))
        for r in results:
            summary.triggers.update(r.fired)
    else:
        assert on_trigger is not None
        for _, scene, user_id, key, ts in heapq.merge(*(r.triggers for r in results)):
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
    summary.shard_cpu = [r.cpu for r in results]
    summary.clock = max(r.clock for r in results) if summary.events_taken else None
    summary.seconds = time.perf_counter() - started
    return summary


def _line_sink(write: Callable[[bytes], object] | None) -> TriggerSink:
    assert write is not None

    def sink(trig: Trigger) -> None:
        write(trigger_line(trig))

    return sink
