"""One price drop on a product with N interested users (issue 26, point 5).

1. **Interest**: N distinct users (default 100,000) each send one
   ``notify_me`` for product ``hot`` (the batched records ``scenetrigger
   produce`` writes). ``scenetrigger worker`` (``--clock event``, RocksDB)
   takes them: its rate from the first event taken to the N-th is the
   worker's **plain event rate** in this run. ``scenetrigger fanout``
   relays them to ``PREFIX.by-product`` and keeps them in its table.
2. **Drop**: once both have taken everything (and the product's first
   record), one record with a lower price goes to ``PREFIX.catalog``.
   Measured from that send, polling both processes' /metrics every 0.2 s:
   - the fan-out computed and handed to the producer (``fanout`` counted N
     ``catalog_change`` events);
   - every user's partition has taken its event (the worker counted N more
     events): **fan-out events/s** = N / this time;
   - the last decision: the worker counted N ``price_drop`` triggers
     (**time to the last decision**).

Uses $SCENETRIGGER_KAFKA (host:port) or starts a broker with scripts/kafka.sh
(bench/worker.py's ``run_on_broker``).

    .venv/bin/python bench/fanout.py --users 100000 --json /tmp/fanout.json
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from worker import (
    REPO,
    _cpu_seconds,
    create_topics,
    fill_batched,
    free_port,
    metric,
    run_on_broker,
    start_worker,
    stop,
)

SCENES = """
engine: {max_triggers_per_user: null}
catalog_interest: {max_users: 1000000}
scenes:
  drop:
    kind: price_drop
"""
TAKEN = 'scenetrigger_events_total{reason="",result="accepted"}'
FIRED = 'scenetrigger_triggers_total{scene="drop"}'
FANNED = "scenetrigger_fanout_events_total"
RELAYED = "scenetrigger_interest_events_total"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def start_fanout(tmp: Path, bootstrap: str, prefix: str, port: int, log: Path
                 ) -> subprocess.Popen[bytes]:
    config = tmp / "scenes-fanout.yaml"
    config.write_text(SCENES)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "fanout", "--broker", bootstrap,
             "--topic-prefix", prefix, "--partitions", "4", "--state-dir",
             str(tmp / "state-fanout"), "--metrics-port", str(port), "--config", str(config)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


async def send_record(bootstrap: str, topic: str, price: int) -> None:
    from agents.kafka_clients import new_producer

    producer = new_producer(bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"hot", value=orjson.dumps(
            {"v": 1, "product_id": "hot", "price_cents": price}))
    finally:
        await producer.stop()


def wait(what: str, done: Any, procs: list[tuple[subprocess.Popen[bytes], Path]],
         timeout_s: float, interval_s: float = 0.2) -> float:
    """Seconds (perf_counter) when ``done()`` first held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return time.perf_counter()
        for proc, log in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a process exited while waiting for {what}:\n"
                                   f"{log.read_text()[-3000:]}")
        time.sleep(interval_s)
    raise RuntimeError(f"timed out waiting for {what}")


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    n = args.users
    prefix = f"bench-fan-{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topics(bootstrap, [f"{prefix}.{t}" for t in
                                          ("events", "ticks", "triggers", "dead-letters",
                                           "by-product")]))
    start = int(time.time() * 1000) - n
    users = [(f"u{i}".encode(), orjson.dumps({"user_id": f"u{i}", "ts": start + i,
                                              "type": "notify_me", "product_id": "hot"}))
             for i in range(n)]
    wport, fport = free_port(), free_port()
    wlog, flog = tmp / "worker.log", tmp / "fanout.log"
    worker = start_worker(tmp, bootstrap, prefix, f"{prefix}-w", "event", wport, wlog,
                          scenes=SCENES)
    fan = start_fanout(tmp, bootstrap, prefix, fport, flog)
    procs = [(worker, wlog), (fan, flog)]
    try:
        wait("both up", lambda: metric(wport, TAKEN) >= 0 and metric(fport, RELAYED) >= 0,
             procs, args.timeout)
        asyncio.run(send_record(bootstrap, f"{prefix}.catalog", 1000))
        fill_s = asyncio.run(fill_batched(bootstrap, f"{prefix}.events", users))
        say(f"wrote {n:,} notify_me events in {fill_s:.1f}s")
        first = wait("the worker's first event", lambda: metric(wport, TAKEN) > 0, procs,
                     args.timeout, 0.05)
        first_n = metric(wport, TAKEN)
        last = wait("the worker took them", lambda: metric(wport, TAKEN) >= n, procs,
                    args.timeout, 0.5)
        plain = (n - first_n) / (last - first)
        say(f"worker: {plain:,.0f} events/s on the interest events")
        wait("the interest relayed", lambda: metric(fport, RELAYED) >= n, procs, args.timeout,
             0.5)
        # Taken by the catalog side: its table's changelog holds the N
        # entries and the product's first record.
        wait("the catalog side took the interest",
             lambda: _changelog(bootstrap, f"{prefix}-fanout") >= n + 1, procs, args.timeout,
             0.5)
        fan_cpu0, worker_cpu0 = _cpu_seconds(fan.pid), _cpu_seconds(worker.pid)
        sent = time.perf_counter()
        asyncio.run(send_record(bootstrap, f"{prefix}.catalog", 900))
        fanned = wait("the fan-out handed to the producer",
                      lambda: metric(fport, FANNED) >= n, procs, args.timeout)
        reached = wait("every user's event taken", lambda: metric(wport, TAKEN) >= 2 * n,
                       procs, args.timeout)
        decided = wait("every decision", lambda: metric(wport, FIRED) >= n, procs,
                       args.timeout)
        fan_cpu, worker_cpu = _cpu_seconds(fan.pid) - fan_cpu0, _cpu_seconds(worker.pid) - \
            worker_cpu0
    finally:
        stop(worker)
        stop(fan)
    return {"users": n, "plain_events_per_s": plain,
            "fanout_computed_s": fanned - sent, "reached_s": reached - sent,
            "fanout_events_per_s": n / (reached - sent), "last_decision_s": decided - sent,
            "fanout_cpu_s": fan_cpu, "worker_cpu_s": worker_cpu}


def _changelog(bootstrap: str, app_id: str) -> int:
    from agents.replication import changelog_topic

    async def ends() -> int:
        from aiokafka import TopicPartition

        from agents.kafka_clients import new_consumer

        topic = changelog_topic(app_id, "catalog-interest")
        consumer = new_consumer(bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(4)]
            return sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()

    return asyncio.run(ends())


def render(r: dict[str, Any]) -> str:
    return "\n".join([
        f"one price drop, {r['users']:,} interested users (one host, 2 cores, shared)",
        f"  worker, plain events (notify_me)     {r['plain_events_per_s']:>12,.0f} events/s",
        f"  fan-out computed + handed over       {r['fanout_computed_s']:>12.2f} s",
        f"  every user's partition took it       {r['reached_s']:>12.2f} s  "
        f"({r['fanout_events_per_s']:,.0f} fan-out events/s)",
        f"  time to the last decision            {r['last_decision_s']:>12.2f} s",
        f"  CPU during the fan-out: fanout {r['fanout_cpu_s']:.1f} s, "
        f"worker {r['worker_cpu_s']:.1f} s",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per step")
    parser.add_argument("--json", help="also write the results here")
    return run_on_broker("bench-fanout-", parser.parse_args(), run, render)


if __name__ == "__main__":
    sys.exit(main())
