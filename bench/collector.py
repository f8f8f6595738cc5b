"""Throughput of one ``scenetrigger collector`` process over HTTP, with acks.

``--clients`` connections POST JSON arrays of ``--batch`` events each, as
fast as the answers come (each answer is sent once Kafka acknowledged the
request's records), for ``--seconds``. Reports accepted events/s and the
collector's CPU per event (from /proc): on a shared machine the second says
what one process sustains per CPU-second whatever the neighbours do. The
load generator's own CPU per event is reported beside it: when it is higher
than the collector's, the generator (aiohttp in Python), not the collector,
caps the wall-clock rate. ``--processes`` spreads the clients over that many
generator processes.

    .venv/bin/python bench/collector.py --seconds 10 --json /tmp/collector.json
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from worker import PARTITIONS, _cpu_seconds, create_topics, free_port, run_on_broker, stop
from worker_latency import TOKEN, _healthy, start_collector


async def _load(url: str, args: argparse.Namespace) -> tuple[int, int, float]:
    """(events accepted, requests refused, seconds) of the clients' run."""
    import aiohttp

    rnd = random.Random(args.seed)
    now = int(time.time() * 1000)
    bodies = [orjson.dumps([{"user_id": f"u{rnd.randrange(50_000)}", "ts": now, "type": "view",
                             "product_id": f"p{rnd.randrange(5_000)}"}
                            for _ in range(args.batch)]) for _ in range(64)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    accepted = refused = 0
    started = time.perf_counter()
    deadline = started + args.seconds

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal accepted, refused
        i = n
        while time.perf_counter() < deadline:
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as resp:
                answer = await resp.read()
                if resp.status == 202:
                    accepted += orjson.loads(answer)["accepted"]
                else:
                    refused += 1
            i += 1

    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, n) for n in range(args.clients)))
    return accepted, refused, time.perf_counter() - started


def _load_process(url: str, args: argparse.Namespace, share: int) -> tuple[int, int, float, float]:
    """One generator process's run: (accepted, refused, seconds, its CPU seconds)."""
    args = argparse.Namespace(**{**vars(args), "clients": share, "seed": args.seed + share})
    cpu0 = time.process_time()
    accepted, refused, took = asyncio.run(_load(url, args))
    return accepted, refused, took, time.process_time() - cpu0


def _generate(url: str, args: argparse.Namespace) -> tuple[int, int, float, float]:
    """The clients spread over ``args.processes`` processes: summed counts and CPU."""
    shares = [args.clients // args.processes + (i < args.clients % args.processes)
              for i in range(args.processes)]
    if args.processes == 1:
        return _load_process(url, args, shares[0])
    with concurrent.futures.ProcessPoolExecutor(args.processes) as pool:
        done = list(pool.map(_load_process, [url] * len(shares), [args] * len(shares), shares))
    return (sum(d[0] for d in done), sum(d[1] for d in done), max(d[2] for d in done),
            sum(d[3] for d in done))


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    rounds = []
    for i in range(args.rounds):
        prefix = f"benchcol-{uuid.uuid4().hex[:6]}"
        asyncio.run(create_topics(bootstrap, [f"{prefix}.events", f"{prefix}.dead-letters"]))
        port = free_port()
        proc = start_collector(bootstrap, prefix, port, tmp / f"{prefix}.log")
        try:
            deadline = time.monotonic() + 60
            while not _healthy(port):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((tmp / f"{prefix}.log").read_text()[-3000:])
                time.sleep(0.2)
            cpu0 = _cpu_seconds(proc.pid)
            accepted, refused, took, gen_cpu = _generate(f"http://127.0.0.1:{port}/events",
                                                         args)
            cpu = _cpu_seconds(proc.pid) - cpu0
        finally:
            stop(proc)
        row = {"round": i + 1, "events_per_s": round(accepted / took), "refused": refused,
               "cpu_us_per_event": round(cpu * 1e6 / max(1, accepted), 1),
               "events_per_cpu_s": round(accepted / cpu) if cpu > 0 else None,
               "generator_cpu_us_per_event": round(gen_cpu * 1e6 / max(1, accepted), 1),
               "load": round(os.getloadavg()[0], 2)}
        print(f"round {i + 1}: {row}", file=sys.stderr)
        rounds.append(row)
    return {"clients": args.clients, "batch": args.batch, "seconds": args.seconds,
            "processes": args.processes,
            "partitions": PARTITIONS, "rounds": rounds,
            "load": [round(x, 2) for x in os.getloadavg()]}


def render(r: dict[str, Any]) -> str:
    lines = [f"| round ({r['clients']} clients x {r['batch']} events per POST, "
             f"{r.get('processes', 1)} generator processes) | events/s "
             "| collector CPU-us/event | events per collector CPU-s "
             "| generator CPU-us/event | refused | load |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["rounds"]:
        lines.append(f"| {row['round']} | {row['events_per_s']:,} | {row['cpu_us_per_event']} "
                     f"| {row['events_per_cpu_s'] or 0:,} "
                     f"| {row.get('generator_cpu_us_per_event', '-')} "
                     f"| {row['refused']} | {row['load']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--batch", type=int, default=100, help="events per POST")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1,
                        help="load generator processes the clients are spread over")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.seconds <= 0 or args.clients < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--seconds > 0, --clients, --batch and --rounds >= 1")
    return run_on_broker("bench-collector-", args, run, render)


if __name__ == "__main__":
    raise SystemExit(main())
