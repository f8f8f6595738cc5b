"""Worker scale-out on a real Kafka (issue 18, point 5).

1. **Drain**: 1, 2 and 4 ``scenetrigger worker`` processes of one consumer
   group (``--clock event``, a fresh app id each time) start; once every one of
   the 8 partitions is assigned, the same N generated events are written as the
   batched records ``scenetrigger produce`` writes to that run's events topic
   (filling is ~10x faster than draining). Events/s from the first event
   taken (any worker) to the N-th (summed over the workers' metrics), and
   CPU-seconds summed over the worker processes (utime + stime from
   /proc/<pid>/stat) while they drain and in all, per event.
2. **Added under load**: one worker drains a fresh group; at a quarter of N a
   second one starts. The consumer group's committed offsets, polled with the
   admin client every 0.2 s, give the longest stretch with no partition
   committing; the trigger_id counts on the triggers topic give the duplicate
   trigger records the hand-over causes.

Uses $SCENETRIGGER_KAFKA (host:port) or starts a broker with scripts/kafka.sh.
Helpers (broker, events, worker processes, metrics) are bench/worker.py's.

    .venv/bin/python bench/scaleout.py --events 200000 --json /tmp/scaleout.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from worker import (
    _cpu_seconds,
    create_topics,
    fill_batched,
    free_port,
    metric,
    run_on_broker,
    start_worker,
    stop,
    synthetic_events,
)

PARTITIONS = 8
TAKEN = 'scenetrigger_events_total{reason="",result="accepted"}'


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_group(tmp: Path, bootstrap: str, prefix: str, app_id: str,
                k: int) -> list[tuple[subprocess.Popen[bytes], int]]:
    return [start_one(tmp, bootstrap, prefix, app_id, i) for i in range(k)]


def start_one(tmp: Path, bootstrap: str, prefix: str, app_id: str,
              i: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = start_worker(tmp, bootstrap, prefix, app_id, "event", port,
                        tmp / f"{app_id}-{i}.log", partitions=PARTITIONS,
                        state_dir=tmp / f"state-{app_id}-{i}")
    return proc, port


def check_alive(tmp: Path, app_id: str, procs: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    for i, (proc, _) in enumerate(procs):
        if proc.poll() is not None:
            log = (tmp / f"{app_id}-{i}.log").read_text()[-3000:]
            raise RuntimeError(f"worker {i} exited {proc.returncode}:\n{log}")


def drain(tmp: Path, bootstrap: str, prefix: str, events: list[tuple[bytes, bytes]], k: int,
          timeout_s: float) -> dict[str, Any]:
    """k workers of a fresh group, once every partition is assigned, drain the
    events written then to a fresh topic: no rebalance during the drain (the
    first of several workers would otherwise take every partition, then hand
    them over and the next owner re-take the uncommitted events)."""
    n = len(events)
    prefix = f"{prefix}-x{k}"
    asyncio.run(create_topics(bootstrap, [f"{prefix}.{t}" for t in
                                          ("events", "ticks", "triggers", "dead-letters")],
                              PARTITIONS))
    app_id = f"{prefix}-{uuid.uuid4().hex[:4]}"
    procs = start_group(tmp, bootstrap, prefix, app_id, k)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            check_alive(tmp, app_id, procs)
            owned = [metric(port, "scenetrigger_partitions ") for _, port in procs]
            if sum(owned) == PARTITIONS and all(x > 0 for x in owned):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{k} workers did not share {PARTITIONS} partitions")
        fill_s = asyncio.run(fill_batched(bootstrap, f"{prefix}.events", events, PARTITIONS))
        say(f"{k} worker(s) own {owned} partitions; filled in {fill_s:.1f}s")
        first_t = 0.0
        cpu_first = 0.0
        all_taking = 0.0
        while time.monotonic() < deadline:
            check_alive(tmp, app_id, procs)
            per = [max(metric(port, TAKEN), 0.0) for _, port in procs]
            now = time.perf_counter()
            taken = sum(per)
            if taken > 0 and not first_t:
                # CPU before the first event: imports, group join, table recovery.
                first_t, cpu_first = now, sum(_cpu_seconds(p.pid) for p, _ in procs)
            if first_t and not all_taking and all(x > 0 for x in per):
                all_taking = now - first_t
            if taken >= n:
                cpu = sum(_cpu_seconds(p.pid) for p, _ in procs)
                seconds = now - first_t
                return {"workers": k, "events_per_s": n / seconds, "seconds": seconds,
                        "cpu_s_drain": cpu - cpu_first, "cpu_s_total": cpu,
                        "cpu_us_per_event": (cpu - cpu_first) / n * 1e6,
                        "taken": taken, "taken_per_worker": per, "fill_s": fill_s,
                        "all_taking_after_s": all_taking or None}
            time.sleep(0.25)  # each scrape costs the worker a few ms of CPU
        raise RuntimeError(f"{k} workers did not drain {n} events in {timeout_s}s")
    finally:
        for proc, _ in procs:
            stop(proc)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import TopicPartition

    from agents.kafka_clients import new_consumer

    consumer = new_consumer(bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def trigger_ids(bootstrap: str, topic: str, start: dict[int, int]) -> Counter[str]:
    """trigger_id counts of the records from `start` to the end of the topic."""
    from aiokafka import TopicPartition

    from agents.kafka_clients import new_consumer

    end = await end_offsets(bootstrap, topic)
    consumer = new_consumer(bootstrap, enable_auto_commit=False)
    await consumer.start()
    counts: Counter[str] = Counter()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp.partition, 0))
        left = {tp.partition for tp in tps if end[tp.partition] > start.get(tp.partition, 0)}
        while left:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                for rec in records:
                    counts[orjson.loads(rec.value)["trigger_id"]] += 1
                if records and records[-1].offset + 1 >= end[tp.partition]:
                    left.discard(tp.partition)
        return counts
    finally:
        await consumer.stop()


async def added_under_load(tmp: Path, bootstrap: str, prefix: str, n: int,
                           timeout_s: float) -> dict[str, Any]:
    from agents.kafka_clients import new_admin

    events_end = await end_offsets(bootstrap, f"{prefix}.events")
    triggers_start = await end_offsets(bootstrap, f"{prefix}.triggers")
    app_id = f"{prefix}-add-{uuid.uuid4().hex[:4]}"
    procs = [await asyncio.to_thread(start_one, tmp, bootstrap, prefix, app_id, 0)]
    admin = new_admin(bootstrap)
    await admin.start()
    try:
        committed: dict[int, int] = {}
        commits: list[float] = []  # times any partition's committed offset moved
        second_at = 0.0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            check_alive(tmp, app_id, procs)
            offsets = await admin.list_consumer_group_offsets(app_id)
            now = time.perf_counter()
            moved = False
            for tp, meta in offsets.items():
                if tp.topic == f"{prefix}.events" and meta.offset > committed.get(tp.partition, 0):
                    committed[tp.partition] = meta.offset
                    moved = True
            if moved:
                commits.append(now)
            if not second_at:
                taken = await asyncio.to_thread(metric, procs[0][1], TAKEN)
                if taken >= n // 4:
                    second_at = now
                    say(f"added: second worker at {taken:,.0f} events taken")
                    procs.append(await asyncio.to_thread(start_one, tmp, bootstrap, prefix,
                                                         app_id, 1))
            elif all(committed.get(p, 0) >= off for p, off in events_end.items()):
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"group {app_id} did not commit to the end in {timeout_s}s")
        taken_each = [await asyncio.to_thread(metric, port, TAKEN) for _, port in procs]
    finally:
        await admin.close()
        for proc, _ in procs:
            await asyncio.to_thread(stop, proc)
    after = [t for t in commits if t >= second_at]
    before = [t for t in commits if t < second_at]
    gaps = [b - a for a, b in zip([before[-1] if before else second_at, *after], after,
                                  strict=False)]
    counts = await trigger_ids(bootstrap, f"{prefix}.triggers", triggers_start)
    records = sum(counts.values())
    return {"second_started_at_events": n // 4,
            "no_commit_s_max": max(gaps, default=0.0),
            "no_commit_s_first_after_add": gaps[0] if gaps else None,
            "events_taken_per_worker": taken_each,
            "extra_events_taken": sum(taken_each) - n,
            "trigger_records": records, "distinct_triggers": len(counts),
            "duplicate_trigger_records": records - len(counts)}


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    prefix = f"scale-{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topics(bootstrap, [f"{prefix}.{t}" for t in
                                          ("events", "ticks", "triggers", "dead-letters")],
                              PARTITIONS))
    events = synthetic_events(args.events, int(time.time() * 1000) - args.events)
    fill_s = asyncio.run(fill_batched(bootstrap, f"{prefix}.events", events, PARTITIONS))
    say(f"filled {prefix}.events ({PARTITIONS} partitions) with {len(events):,} events "
        f"as batched records in {fill_s:.1f}s")
    drains = []
    for k in args.workers:
        row = drain(tmp, bootstrap, prefix, events, k, args.timeout)
        say(f"{k} worker(s): {row['events_per_s']:,.0f} events/s, "
            f"{row['cpu_us_per_event']:.1f} CPU-µs/event while draining "
            f"({row['cpu_s_total']:.1f} CPU-s in all)")
        drains.append(row)
    added = None
    if not args.skip_added:
        added = asyncio.run(added_under_load(tmp, bootstrap, prefix, len(events), args.timeout))
        say(f"added under load: {added}")
    cpus = os.cpu_count() or 1
    return {"events": len(events), "partitions": PARTITIONS, "cpus": cpus,
            "cpu_source": "/proc/<pid>/stat utime+stime", "drains": drains,
            "added": added, "load": os.getloadavg()}


def render(r: dict[str, Any]) -> str:
    base = r["drains"][0]["events_per_s"] if r["drains"] else 1.0
    lines = [f"| {r['events']:,} batched events, {r['partitions']} partitions | events/s "
             "| × 1 worker | events/s per CPU used | CPU-µs/event (drain) | CPU-s in all "
             "| all workers taking after |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for d in r["drains"]:
        cpus_used = d["cpu_s_drain"] / d["seconds"]
        lines.append(
            f"| {d['workers']} | {d['events_per_s']:,.0f} | {d['events_per_s'] / base:.2f} "
            f"| {d['events_per_s'] / max(cpus_used, 1e-9):,.0f} ({cpus_used:.2f} CPUs busy) "
            f"| {d['cpu_us_per_event']:.1f} | {d['cpu_s_total']:.1f} "
            f"| {d['all_taking_after_s'] or 0:.1f} s |")
    a = r["added"]
    if a:
        lines += ["", "| second worker added at 1/4 of the drain | |", "|---|---:|",
                  f"| longest stretch with no partition committing | {a['no_commit_s_max']:.1f} s |",
                  f"| first stretch after the add | {a['no_commit_s_first_after_add'] or 0:.1f} s |",
                  f"| events taken twice (sum taken − N) | {a['extra_events_taken']:,.0f} |",
                  f"| trigger records / distinct trigger_ids | {a['trigger_records']:,} / "
                  f"{a['distinct_triggers']:,} |",
                  f"| duplicate trigger records | {a['duplicate_trigger_records']:,} |"]
    lines.append(f"\n{r['cpus']} CPUs; load average at the end: "
                 f"{', '.join(f'{x:.1f}' for x in r['load'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--workers", default="1,2,4", help="group sizes (default 1,2,4)")
    parser.add_argument("--skip-added", action="store_true",
                        help="leave out the worker-added-under-load run")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    args.workers = [int(x) for x in args.workers.split(",") if x]
    return run_on_broker("bench-scaleout-", args, run, render)


if __name__ == "__main__":
    raise SystemExit(main())
