"""The worker against the Quix Streams peer on three workloads, in one run.

Each workload's events are written twice: as the batched records the
collector and ``scenetrigger produce`` write (read by one ``scenetrigger
worker``, ``--clock event``, RocksDB table, changelog, trigger sends) and as
one-event JSON records (read by the Quix peer, ``bench/quix_peer.py``, its
repeat and arrival scenes with RocksDB state and changelog). Each round runs
every workload on both, alternating which goes first; the ratio is worker
over Quix events/s within a round (the same neighbours' load).

- ``current``: 50k users, views 80 %, promo pages 10 %, carts 7 %, purchases
  3 %, event time spanning 30 minutes (issue 25's workload);
- ``timers``: many users with ~2 events each over 2 hours of event time,
  longer than the 30-minute absence window, so cart timers fire;
- ``heavy``: 200 users with ~1,000 events each.

Rates count from the first event taken to the last; CPU is the process's
whole CPU time (start-up included) over the events.

    make .venv-quix/.installed-stamp   # the peer's venv (as make bench-worker)
    .venv/bin/python bench/peer.py --events 200000 --rounds 2 --json /tmp/peer.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from worker import (
    REPO,
    create_topics,
    fill,
    fill_batched,
    quix_drain,
    run_on_broker,
    worker_drain,
)

WORKLOADS = ("current", "timers", "heavy")
SHAPES = {  # users, event-time span (ms)
    "current": (50_000, 30 * 60_000),
    "timers": (None, 2 * 3_600_000),  # None: half as many users as events
    "heavy": (200, 30 * 60_000),
}


def workload(name: str, n: int, start_ms: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """Keyed events of a workload, ts rising evenly over its span."""
    users, span = SHAPES[name]
    users = users or max(1, n // 2)
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        user = f"u{rnd.randrange(users)}"
        ev: dict[str, Any] = {"user_id": user, "ts": start_ms + i * span // n}
        r = rnd.random()
        if r < 0.80:
            ev.update(type="view", product_id=f"p{rnd.randrange(5_000)}")
        elif r < 0.90:
            ev.update(type="page", page=f"/promo/{rnd.randrange(20)}")
        elif r < 0.97:
            ev.update(type="cart", product_id=f"p{rnd.randrange(5_000)}")
        else:
            ev.update(type="purchase", product_id=f"p{rnd.randrange(5_000)}", price="9.99")
        out.append((user.encode(), orjson.dumps(ev)))
    return out


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    names = [w for w in args.workloads.split(",") if w]
    n = args.events
    topics: dict[str, tuple[str, str]] = {}
    for name in names:
        prefix = f"peer-{name}-{uuid.uuid4().hex[:6]}"
        one = f"{prefix}-one.events"
        asyncio.run(create_topics(bootstrap, [one, f"{one}-quix-triggers", *(
            f"{prefix}.{t}" for t in ("events", "ticks", "triggers", "dead-letters"))]))
        events = workload(name, n, int(time.time() * 1000) - 3 * 3_600_000)
        asyncio.run(fill(bootstrap, one, events))
        asyncio.run(fill_batched(bootstrap, f"{prefix}.events", events))
        topics[name] = (prefix, one)
        print(f"filled {name}: {n:,} events", file=sys.stderr)
    rows: dict[str, dict[str, list[float]]] = {
        w: {"worker": [], "quix": [], "worker_cpu": [], "quix_cpu": [], "load": []}
        for w in names}
    for i in range(args.rounds):
        for name in names:
            prefix, one = topics[name]
            order = ("worker", "quix") if i % 2 == 0 else ("quix", "worker")
            for runner in order:
                if runner == "worker":
                    rate, cpu = worker_drain(tmp, bootstrap, prefix, n, 900)
                else:
                    rate, cpu = quix_drain(args.quix_python, bootstrap, one, n, tmp)
                rows[name][runner].append(rate)
                rows[name][f"{runner}_cpu"].append(cpu * 1e6 / n)
                print(f"round {i + 1} {name}: {runner} {rate:,.0f}/s "
                      f"({cpu * 1e6 / n:.0f} CPU-us/event)", file=sys.stderr)
            rows[name]["load"].append(os.getloadavg()[0])
    ratios = {w: [a / b for a, b in zip(r["worker"], r["quix"], strict=True)]
              for w, r in rows.items()}
    return {"events": n, "rows": rows, "ratios": ratios,
            "load": [round(x, 2) for x in os.getloadavg()]}


def render(r: dict[str, Any]) -> str:
    def span(xs: list[float], fmt: str) -> str:
        return (f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"
                if xs else "–")

    lines = [f"| workload ({r['events']:,} events) | worker events/s | Quix events/s "
             "| worker/Quix per round | CPU-us/event worker / Quix | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in r["rows"].items():
        lines.append(
            f"| {name} | {span(row['worker'], ',.0f')} | {span(row['quix'], ',.0f')} "
            f"| {span(r['ratios'][name], '.2f')} | {span(row['worker_cpu'], '.0f')} / "
            f"{span(row['quix_cpu'], '.0f')} | {span(row['load'], '.1f')} |")
    lines.append("\nmedian (min–max) over rounds; load average at the end: "
                 + ", ".join(f"{x:.1f}" for x in r["load"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="per workload")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated, of: " + ",".join(WORKLOADS))
    parser.add_argument("--quix-python", default=str(REPO / ".venv-quix" / "bin" / "python"),
                        help="python of the venv with quixstreams (make bench-worker builds it)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown or args.events < 1 or args.rounds < 1:
        parser.error(f"unknown workloads {sorted(unknown)}" if unknown
                     else "--events and --rounds must be >= 1")
    return run_on_broker("bench-peer-", args, run, render)


if __name__ == "__main__":
    raise SystemExit(main())
