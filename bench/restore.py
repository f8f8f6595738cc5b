"""Restoring a partition's user states from the table changelog (issue 18, point 5).

1. **Fill**: N distinct users, one view each, written as the batched records
   ``scenetrigger produce`` writes to a fresh events topic of few partitions
   (default 2: one partition holds ~N/2 users).
2. **Build the changelog**: one ``scenetrigger worker`` (RocksDB store,
   ``--clock event``) takes all N events; once the changelog's end offsets
   stop moving it is stopped (SIGTERM, wait).
3. **Restore**: a second worker of the same app id with a FRESH state dir
   must restore every partition from the changelog. Right after it starts,
   a few probe events (both partitions) are written; Faust processes no
   stream event before table recovery is done, so the time from start until
   its ``scenetrigger_events_total{result="accepted"}`` counts the probes
   bounds the restore (process start and group join included).
4. **Startup alone**: the same measure on a worker whose changelog is empty
   (its own app id and topics). users/s = N / (restore - startup).
5. **Standby** (``--standby``): two workers of one group, each holding the
   other's partition as a standby (the worker's ``--standby-replicas``,
   default 1), take N users; one is stopped and probes are written: the
   seconds until the other has taken them all (rebalance and standby
   catch-up included) against the fresh-state restore above.

The worker is not changed. Uses $SCENETRIGGER_KAFKA (host:port) or starts a
broker with scripts/kafka.sh. Helpers are bench/worker.py's and
bench/scaleout.py's.

    .venv/bin/python bench/restore.py --users 1000000 --json /tmp/restore.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from scaleout import TAKEN, say
from worker import (
    _cpu_seconds,
    create_topics,
    fill_batched,
    free_port,
    metric,
    run_on_broker,
    start_worker,
    stop,
)

PROBES = 16  # 2^-15 odds that they all hash to one of 2 partitions
TOPICS = ("events", "ticks", "triggers", "dead-letters")
SCENES = """
scenes:
  repeat_view_no_purchase:
    kind: repeat
    when: {type: view}
    per: product_id
    count: 3
    within: 30m
    unless: {type: purchase}
    cooldown: 24h
"""


def user_events(n: int, start_ms: int, tag: str = "u") -> list[tuple[bytes, bytes]]:
    """n distinct users, one view each (each one user state in the table)."""
    return [(f"{tag}{i}".encode(),
             orjson.dumps({"user_id": f"{tag}{i}", "ts": start_ms + i, "type": "view",
                           "product_id": f"p{i % 5_000}"}))
            for i in range(n)]


async def changelog_records(bootstrap: str, app_id: str, partitions: int) -> int:
    from aiokafka import TopicPartition

    from agents.kafka_clients import new_consumer
    from agents.replication import changelog_topic

    topic = changelog_topic(app_id, "user-state")
    consumer = new_consumer(bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def check(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}")


def build_changelog(tmp: Path, bootstrap: str, prefix: str, app_id: str, n: int,
                    partitions: int, timeout_s: float) -> dict[str, Any]:
    port = free_port()
    log = tmp / f"{app_id}-build.log"
    proc = start_worker(tmp, bootstrap, prefix, app_id, "event", port, log, scenes=SCENES,
                        partitions=partitions, state_dir=tmp / "state-build")
    started = time.perf_counter()
    try:
        deadline = time.monotonic() + timeout_s
        while metric(port, TAKEN) < n:
            check(proc, log)
            if time.monotonic() > deadline:
                raise RuntimeError(f"build worker did not take {n} events in {timeout_s}s")
            time.sleep(1.0)
        took = time.perf_counter() - started
        say(f"build worker took {n:,} events in {took:.1f}s; waiting for the changelog")
        # Flushed: the changelog's end offsets hold still for 3 s after >= n.
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            check(proc, log)
            now_n = asyncio.run(changelog_records(bootstrap, app_id, partitions))
            if now_n != last:
                last, still_since = now_n, time.monotonic()
            elif now_n >= n and time.monotonic() - still_since >= 3.0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"changelog stuck at {last} records (< {n})")
        cpu = _cpu_seconds(proc.pid)
    finally:
        stop(proc)
    say(f"build worker stopped (rc {proc.returncode}); changelog holds {last:,} records")
    return {"take_s": took, "changelog_records": last, "cpu_s": cpu}


def probed_start(tmp: Path, bootstrap: str, prefix: str, app_id: str, partitions: int,
                 label: str, timeout_s: float) -> dict[str, Any]:
    """Seconds from starting a fresh-state worker until it has taken the probes
    written right after its start."""
    port = free_port()
    log = tmp / f"{app_id}-{label}.log"
    probes = user_events(PROBES, int(time.time() * 1000), tag=f"probe-{label}-")
    t0 = time.perf_counter()
    proc = start_worker(tmp, bootstrap, prefix, app_id, "event", port, log, scenes=SCENES,
                        partitions=partitions, state_dir=tmp / f"state-{label}")
    try:
        asyncio.run(fill_batched(bootstrap, f"{prefix}.events", probes, partitions))
        metrics_up = 0.0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            check(proc, log)
            taken = metric(port, TAKEN)
            now = time.perf_counter()
            if taken >= 0 and not metrics_up:
                metrics_up = now - t0
            if taken >= PROBES:
                return {"seconds": now - t0, "metrics_up_s": metrics_up,
                        "cpu_s": _cpu_seconds(proc.pid)}
            time.sleep(0.1)
        raise RuntimeError(f"{label} worker did not take the probes in {timeout_s}s")
    finally:
        stop(proc)


def standby_takeover(tmp: Path, bootstrap: str, prefix: str, n: int, partitions: int,
                     timeout_s: float) -> dict[str, Any]:
    """Two workers of one group (each the other's standby: the worker's default
    --standby-replicas 1) take the N users; one is stopped (SIGTERM, wait) and
    probes are written: seconds until the other has taken them all, the
    stopped one's partition included (rebalance + standby catch-up)."""
    app_id = f"{prefix}-app"
    procs = []
    for i in range(2):
        port = free_port()
        log = tmp / f"{app_id}-{i}.log"
        procs.append((start_worker(tmp, bootstrap, prefix, app_id, "event", port, log,
                                   scenes=SCENES, partitions=partitions,
                                   state_dir=tmp / f"state-standby-{i}"), port, log))
    try:
        deadline = time.monotonic() + timeout_s
        while min(metric(port, "scenetrigger_partitions ") for _, port, _ in procs) <= 0:
            for proc, _, log in procs:
                check(proc, log)
            if time.monotonic() > deadline:
                raise RuntimeError("two workers did not share the partitions")
            time.sleep(0.5)
        asyncio.run(fill_batched(bootstrap, f"{prefix}.events",
                                 user_events(n, int(time.time() * 1000) - n), partitions))
        while sum(max(metric(port, TAKEN), 0.0) for _, port, _ in procs) < n:
            for proc, _, log in procs:
                check(proc, log)
            if time.monotonic() > deadline:
                raise RuntimeError(f"two workers did not take {n} events")
            time.sleep(1.0)
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:  # changelog and standby copies settle
            now_n = asyncio.run(changelog_records(bootstrap, app_id, partitions))
            if now_n != last:
                last, still_since = now_n, time.monotonic()
            elif now_n >= n and time.monotonic() - still_since >= 5.0:
                break
            time.sleep(0.5)
        stopped, (proc_b, port_b, log_b) = procs[0][0], procs[1]
        t_stop = time.perf_counter()
        stop(stopped)
        stop_s = time.perf_counter() - t_stop
        before = metric(port_b, TAKEN)
        t0 = time.perf_counter()
        asyncio.run(fill_batched(bootstrap, f"{prefix}.events",
                                 user_events(PROBES, int(time.time() * 1000), "probe-sb-"),
                                 partitions))
        while time.monotonic() < deadline:
            check(proc_b, log_b)
            if metric(port_b, TAKEN) >= before + PROBES:
                return {"takeover_s": time.perf_counter() - t0, "stop_s": stop_s,
                        "changelog_records": last}
            time.sleep(0.1)
        raise RuntimeError("the standby worker did not take the probes")
    finally:
        for proc, _, _ in procs:
            stop(proc)


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    n, parts = args.users, args.partitions
    prefix = f"restore-{uuid.uuid4().hex[:6]}"
    empty = f"{prefix}-empty"
    asyncio.run(create_topics(bootstrap, [f"{p}.{t}" for p in (prefix, empty) for t in TOPICS],
                              parts))
    startups = [probed_start(tmp, bootstrap, empty, f"{empty}-app", parts, f"empty{i}",
                             args.timeout) for i in range(args.startup_runs)]
    say(f"startup alone (empty changelog): {[round(s['seconds'], 1) for s in startups]} s")
    events = user_events(n, int(time.time() * 1000) - n)
    fill_s = asyncio.run(fill_batched(bootstrap, f"{prefix}.events", events, parts))
    del events
    say(f"filled {prefix}.events ({parts} partitions) with {n:,} users' views in {fill_s:.1f}s")
    app_id = f"{prefix}-app"
    built = build_changelog(tmp, bootstrap, prefix, app_id, n, parts, args.timeout)
    restore = probed_start(tmp, bootstrap, prefix, app_id, parts, "restore", args.timeout)
    startup = min(s["seconds"] for s in startups)
    restore_only = restore["seconds"] - startup
    say(f"restore bound {restore['seconds']:.1f}s, startup {startup:.1f}s")
    standby = None
    if args.standby:
        sb = f"{prefix}-sb"
        asyncio.run(create_topics(bootstrap, [f"{sb}.{t}" for t in TOPICS], parts))
        standby = standby_takeover(tmp, bootstrap, sb, n, parts, args.timeout)
        say(f"standby takeover: {standby}")
    return {"users": n, "partitions": parts, "fill_s": fill_s, "build": built,
            "standby": standby,
            "startups": startups, "startup_s": startup, "restore": restore,
            "restore_minus_startup_s": restore_only,
            "users_per_s": n / restore_only if restore_only > 0 else None,
            "cpus": os.cpu_count(), "load": os.getloadavg()}


def render(r: dict[str, Any]) -> str:
    rate = f"{r['users_per_s']:,.0f}" if r["users_per_s"] else "n/a"
    return "\n".join([
        f"| {r['users']:,} users, {r['partitions']} partitions | |", "|---|---:|",
        f"| changelog records | {r['build']['changelog_records']:,} |",
        f"| start → probes taken, fresh state, full changelog | {r['restore']['seconds']:.1f} s |",
        "| start → probes taken, empty changelog (startup alone, best of "
        f"{len(r['startups'])}) | {r['startup_s']:.1f} s |",
        f"| difference (restore) | {r['restore_minus_startup_s']:.1f} s |",
        f"| users restored/s | {rate} |",
        f"| restoring worker CPU-s until probes taken | {r['restore']['cpu_s']:.1f} |",
        *([f"| with a standby: other worker stopped → probes taken by the standby "
           f"| {r['standby']['takeover_s']:.1f} s |"] if r.get("standby") else []),
        f"\n{r['cpus']} CPUs; load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in r['load'])}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--startup-runs", type=int, default=2,
                        help="empty-changelog runs; the fastest is the startup (default 2)")
    parser.add_argument("--standby", action="store_true",
                        help="also time a takeover by a worker holding a standby copy")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per step")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    return run_on_broker("bench-restore-", args, run, render)


if __name__ == "__main__":
    raise SystemExit(main())
