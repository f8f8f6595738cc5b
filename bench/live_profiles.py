"""What publishing live profiles (``PREFIX.profiles``, agents/live_profiles.py)
costs the worker: CPU per event of ``scenetrigger worker`` draining the same
batched records with and without ``--no-live-profiles``, in the same run,
the order alternating each round (a neighbour's burst hits both).

The events are bench/worker.py's synthetic clickstream (50k users, 5k
products); each settle publishes one record per user it changed.

    .venv/bin/python bench/live_profiles.py --events 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker import (  # bench/ is not a package: its path is put first above
    CONFIG,
    PARTITIONS,
    REPO,
    _cpu_seconds,
    create_topics,
    fill_batched,
    free_port,
    metric,
    run_on_broker,
    stop,
    synthetic_events,
)

RUNNERS = {"off": ["--no-live-profiles"], "on": []}


def drain(tmp: Path, bootstrap: str, prefix: str, n: int, extra: list[str],
          timeout_s: float = 900) -> tuple[float, float, float]:
    """(events/s, worker CPU seconds, profile records) of one fresh worker
    (``--clock event``) draining the pre-filled topic."""
    app_id = f"{prefix}-w{uuid.uuid4().hex[:6]}"
    port = free_port()
    config = tmp / "scenes.yaml"
    config.write_text(CONFIG)
    log = tmp / f"{app_id}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "worker", "--broker", bootstrap,
             "--app-id", app_id, "--topic-prefix", prefix, "--partitions", str(PARTITIONS),
             "--state-dir", str(tmp / f"state-{app_id}"), "--clock", "event",
             "--metrics-port", str(port), "--config", str(config), *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        first_t = first_n = 0.0
        name = 'scenetrigger_events_total{reason="",result="accepted"}'
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{log.read_text()[-3000:]}")
            taken = metric(port, name)
            now = time.perf_counter()
            if taken > 0 and not first_t:
                first_t, first_n = now, taken
            if taken >= n:
                cpu = _cpu_seconds(proc.pid)
                records = metric(port, "scenetrigger_worker_profiles_total")
                return (n - first_n) / (now - first_t), cpu, max(records, 0.0)
            time.sleep(0.5)
        raise RuntimeError(f"worker did not drain {n} events in {timeout_s}s")
    finally:
        stop(proc)


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    prefix = f"bench-prof-{uuid.uuid4().hex[:6]}"
    events = synthetic_events(args.events, int(time.time() * 1000) - args.events)
    asyncio.run(create_topics(bootstrap, [f"{prefix}.{t}" for t in
                                          ("events", "ticks", "triggers", "dead-letters")]))
    asyncio.run(fill_batched(bootstrap, f"{prefix}.events", events))
    n = len(events)
    out: dict[str, dict[str, list[float]]] = {
        r: {"rate": [], "cpu_us_per_event": [], "records_per_event": []} for r in RUNNERS}
    for i in range(args.rounds):
        order = list(RUNNERS) if i % 2 == 0 else list(reversed(RUNNERS))
        for runner in order:
            rate, cpu, records = drain(tmp, bootstrap, prefix, n, RUNNERS[runner])
            out[runner]["rate"].append(rate)
            out[runner]["cpu_us_per_event"].append(cpu / n * 1e6)
            out[runner]["records_per_event"].append(records / n)
            print(f"round {i + 1}: {runner} {rate:,.0f}/s, {cpu / n * 1e6:.1f} us CPU/event, "
                  f"{records / n:.2f} profile records/event", file=sys.stderr)
    ratio = [on / off for on, off in zip(out["on"]["cpu_us_per_event"],
                                         out["off"]["cpu_us_per_event"], strict=True)]
    return {"events": n, "runs": out, "cpu_ratio_on_off": ratio, "load": os.getloadavg()}


def render(result: dict[str, Any]) -> str:
    def span(values: list[float], fmt: str) -> str:
        return (f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
                if values else "-")

    runs = result["runs"]
    lines = [f"{result['events']:,} batched events, {len(result['cpu_ratio_on_off'])} rounds, "
             f"load {', '.join(f'{x:.1f}' for x in result['load'])}",
             "| live profiles | events/s | CPU us/event | profile records/event |",
             "|---|---|---|---|"]
    for runner in RUNNERS:
        lines.append(f"| {runner} | {span(runs[runner]['rate'], ',.0f')} | "
                     f"{span(runs[runner]['cpu_us_per_event'], '.1f')} | "
                     f"{span(runs[runner]['records_per_event'], '.2f')} |")
    lines.append(f"CPU per event on/off, same round: {span(result['cpu_ratio_on_off'], '.2f')}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    return run_on_broker("bench-live-profiles-", parser.parse_args(), run, render)


if __name__ == "__main__":
    raise SystemExit(main())
