"""Latency of the production path at fixed offered rates, with its floor.

HTTP POSTs to ``scenetrigger collector`` -> the events topic -> one
``scenetrigger worker`` (wall clock, RocksDB table) -> the triggers topic.
Every ``--tick-ms`` the events of that tick go out as one POST (a JSON
array): random background views of 20k users, and ``--arrivals`` of them
fresh promo-page arrivals, each by a user seen once, so each must fire
``promo_arrival`` exactly once. Latency runs from the start of the POST that
carried an arrival to a consumer of the triggers topic receiving its
trigger; ``lost`` counts arrivals the collector accepted (202) whose trigger
never came (waited for until the topic is quiet for ``--drain`` seconds).
The warm-up (``--warmup`` seconds, then on until the triggers of the last 20
arrivals came within 200 ms, at most 60 s; a fresh worker opens its stores
and fills its caches then) counts for ``lost`` only.

The floor: a bare aiokafka producer (acks=all, as the worker's) -> consumer
round trip on the same broker at the same rate, read the same way.

Each rate gets a fresh worker, collector and topics. Uses $SCENETRIGGER_KAFKA
(host:port) or starts a broker of its own.

    .venv/bin/python bench/path.py --seconds 10 --json /tmp/path.json
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from worker import (
    CONFIG,
    PARTITIONS,
    _cpu_seconds,
    create_topics,
    free_port,
    metric,
    run_on_broker,
    start_worker,
    stop,
)
from worker_latency import TOKEN, _healthy, start_collector

Send = Callable[[list[dict[str, Any]]], Awaitable[bool]]


def _pcts(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": -1.0, "p99": -1.0, "max": -1.0, "n": len(values)}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(max(values), 1),
            "n": len(values)}


async def _offer(send: Send, rate: int, seconds: float, warmup: float, tick_ms: int,
                 arrivals: float, seed: int, warm: dict[str, float],
                 caught_up: Callable[[], bool]) -> tuple[dict[str, float], int]:
    """Offer ``rate`` events/s through ``send`` (one call per tick, its events):
    a warm-up of at least ``warmup`` seconds, until ``caught_up()`` (at most
    60 s), then ``seconds`` measured. Fills ``warm`` with the warm-up's
    arrivals; returns the start time of each measured arrival (by user) and
    how many events were offered."""
    rnd = random.Random(seed)
    started_at: dict[str, float] = {}
    measured_from: float | None = None
    next_check = warmup
    calls: set[asyncio.Task[None]] = set()
    tick = tick_ms / 1000
    per_tick = rate * tick
    owed = 0.0
    sent = fresh = 0
    run = uuid.uuid4().hex[:6]
    started = time.perf_counter()

    async def call(batch: list[dict[str, Any]], mine: list[str]) -> None:
        if not await send(batch):  # not accepted: not expected either
            for user in mine:
                started_at.pop(user, None)
                warm.pop(user, None)

    n_ticks = 0
    while True:
        elapsed = time.perf_counter() - started
        if measured_from is None and elapsed >= next_check:
            next_check = elapsed + 0.5  # the check reads the warm-up's arrivals
            if caught_up() or elapsed > 60:
                measured_from = elapsed
        if measured_from is not None and elapsed - measured_from >= seconds:
            break
        owed += per_tick
        batch: list[dict[str, Any]] = []
        mine: list[str] = []
        now_ms = int(time.time() * 1000)
        while owed >= 1:
            owed -= 1
            if rnd.random() < arrivals:
                fresh += 1
                user = f"a{run}-{fresh}"
                batch.append({"user_id": user, "ts": now_ms, "type": "page",
                              "page": "/promo/x"})
                mine.append(user)
            else:
                batch.append({"user_id": f"b{rnd.randrange(20_000)}", "ts": now_ms,
                              "type": "view", "product_id": f"p{rnd.randrange(5_000)}"})
        if batch:
            sent += len(batch)
            t0 = time.time()
            for user in mine:
                (warm if measured_from is None else started_at)[user] = t0
            task = asyncio.create_task(call(batch, mine))
            calls.add(task)
            task.add_done_callback(calls.discard)
        n_ticks += 1
        await asyncio.sleep(max(0.0, started + n_ticks * tick - time.perf_counter()))
    if calls:
        await asyncio.gather(*calls)
    return started_at, sent


def _stages(started_at: dict[str, float], stored: dict[str, float],
            marks: dict[str, tuple[float, float]],
            arrived: dict[str, float]) -> dict[str, dict[str, float]]:
    """Where each measured arrival's time went, ms: POST -> its event record's
    timestamp (collector), -> ``fired_at_ms`` (the worker decided), -> the
    trigger record's timestamp (the worker sent it), -> a consumer got it."""
    steps: dict[str, list[float]] = {"post_to_stored": [], "stored_to_decided": [],
                                     "decided_to_sent": [], "sent_to_read": []}
    for user, t0 in started_at.items():
        if user not in arrived or user not in stored or user not in marks:
            continue
        decided, sent = marks[user]
        steps["post_to_stored"].append((stored[user] - t0) * 1000)
        steps["stored_to_decided"].append((decided - stored[user]) * 1000)
        steps["decided_to_sent"].append((sent - decided) * 1000)
        steps["sent_to_read"].append((arrived[user] - sent) * 1000)
    return {name: _pcts(values) for name, values in steps.items()}


async def _measure(bootstrap: str, topic: str, send: Send, args: argparse.Namespace,
                   rate: int, events_topic: str | None = None) -> dict[str, Any]:
    """Offer the load through ``send`` while reading ``topic``; latency per
    arrival, and per stage when ``events_topic`` (the path's input) is given."""
    from aiokafka import TopicPartition

    from agents.kafka_clients import new_consumer

    consumer = new_consumer(bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    inputs = [] if events_topic is None else [TopicPartition(events_topic, p)
                                              for p in range(PARTITIONS)]
    consumer.assign(tps + inputs)
    await consumer.seek_to_beginning(*tps, *inputs)
    stored: dict[str, float] = {}  # arrival user -> its event record's timestamp, s
    marks: dict[str, tuple[float, float]] = {}  # user -> (fired_at, trigger record ts), s
    arrived: dict[str, float] = {}
    warm: dict[str, float] = {}
    offered = asyncio.Event()
    expected: list[Any] = []  # (measured, warm-up) arrivals, once all are offered

    def complete() -> bool:
        return all(u in arrived for users in expected for u in users)

    async def read() -> None:
        quiet_since = time.monotonic()
        while not (offered.is_set() and (time.monotonic() - quiet_since > args.drain
                                         or complete())):
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for tp, records in batch.items():
                if tp.topic == events_topic:
                    for rec in records:
                        got = orjson.loads(rec.value)  # a batch, or one event
                        for ev in got if isinstance(got, list) else [got]:
                            if ev.get("type") == "page":  # an arrival
                                stored.setdefault(ev["user_id"], rec.timestamp / 1000)
                    continue
                quiet_since = time.monotonic()
                for rec in records:
                    trig = orjson.loads(rec.value)
                    user = trig["user_id"]
                    if user not in arrived:  # a re-sent trigger counts once
                        arrived[user] = now
                        if events_topic is not None:
                            marks[user] = (trig["fired_at_ms"] / 1000, rec.timestamp / 1000)

    reader = asyncio.create_task(read())
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    def caught_up() -> bool:
        """The last 20 warm-up arrivals posted over 1 s ago came within 200 ms."""
        now = time.time()
        old = [u for u, t in list(warm.items())[-400:] if now - t > 1.0][-20:]
        return len(old) == 20 and all(u in arrived and arrived[u] - warm[u] < 0.2
                                      for u in old)

    try:
        started_at, sent = await _offer(send, rate, args.seconds, args.warmup, args.tick_ms,
                                        args.arrivals, args.seed, warm, caught_up)
        took = time.perf_counter() - t0
        expected.extend((started_at, warm))
        offered.set()
        await asyncio.wait_for(reader, timeout=600)
    finally:
        reader.cancel()
        await consumer.stop()
    latencies = [(arrived[u] - t) * 1000 for u, t in started_at.items() if u in arrived]
    lost = sum(1 for u in [*started_at, *warm] if u not in arrived)
    result = {"rate": rate, "offered_per_s": round(sent / took, 1), "events": sent,
              "warmup_s": round(took - args.seconds, 1),
              "arrivals": len(started_at) + len(warm), "lost": lost, **_pcts(latencies),
              "load": [round(x, 2) for x in (load0, *os.getloadavg()[:1])]}
    if events_topic is not None:
        result["stages"] = _stages(started_at, stored, marks, arrived)
    return result


async def floor(bootstrap: str, args: argparse.Namespace, rate: int) -> dict[str, Any]:
    """A bare aiokafka produce -> consume round trip at the same rate."""
    from agents.kafka_clients import new_producer

    topic = f"benchpath-floor-{uuid.uuid4().hex[:6]}"
    await create_topics(bootstrap, [topic])
    # The factory's producer with aiokafka's own linger (0): the bare round trip.
    producer = new_producer(bootstrap, linger_ms=0)
    await producer.start()
    pending: set[Any] = set()

    async def send(batch: list[dict[str, Any]]) -> bool:
        for ev in batch:  # every event, one record each: the broker's load of the path
            key = ev["user_id"].encode()
            pending.add(await producer.send(topic, key=key, value=orjson.dumps(ev)))
        done = list(pending)
        pending.clear()
        if done:
            await asyncio.gather(*done)
        return True

    try:
        return await _measure(bootstrap, topic, send, args, rate)
    finally:
        await producer.stop()


def path(tmp: Path, bootstrap: str, args: argparse.Namespace, rate: int) -> dict[str, Any]:
    """A fresh worker and collector under ``rate`` events/s offered over HTTP."""
    prefix = f"benchpath-{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topics(bootstrap, [f"{prefix}.{t}" for t in
                                          ("events", "ticks", "triggers", "dead-letters")]))
    port, http_port = free_port(), free_port()
    log = tmp / f"{prefix}.log"
    worker = start_worker(tmp, bootstrap, prefix, prefix, "wall", port, log, CONFIG,
                          extra=args.worker_args.split(), own_session=True)
    # Each in a session of its own, as services run: with the kernel's
    # autogroup scheduling the worker would otherwise share one CPU share with
    # this driver and the collector on a busy machine.
    collector = start_collector(bootstrap, prefix, http_port, tmp / f"{prefix}-c.log",
                                own_session=True)
    try:
        deadline = time.monotonic() + 180
        while metric(port, "scenetrigger_partitions") < PARTITIONS or not _healthy(http_port):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            time.sleep(0.2)
        cpu0 = _cpu_seconds(worker.pid), _cpu_seconds(collector.pid)
        result = asyncio.run(_over_http(bootstrap, f"http://127.0.0.1:{http_port}/events",
                                        prefix, args, rate))
        cpu1 = _cpu_seconds(worker.pid), _cpu_seconds(collector.pid)
        per = 1e6 / max(1, result["events"])
        result["cpu_us_per_event"] = {"worker": round((cpu1[0] - cpu0[0]) * per, 1),
                                      "collector": round((cpu1[1] - cpu0[1]) * per, 1)}
        return result
    finally:
        stop(collector)
        stop(worker)


async def _over_http(bootstrap: str, url: str, prefix: str, args: argparse.Namespace,
                     rate: int) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async def send(batch: list[dict[str, Any]]) -> bool:
            async with session.post(url, data=orjson.dumps(batch), headers=headers) as resp:
                await resp.read()
                return resp.status == 202

        return await _measure(bootstrap, f"{prefix}.triggers", send, args, rate,
                              f"{prefix}.events")


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    rates = [int(r) for r in args.rates.split(",") if r]
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for rate in rates:
            base = asyncio.run(floor(bootstrap, args, rate))
            got = path(tmp, bootstrap, args, rate)
            print(f"round {i + 1} at {rate}/s: path {got}\n  floor {base}", file=sys.stderr)
            rounds.append({"round": i + 1, "rate": rate, "path": got, "floor": base})
    return {"seconds": args.seconds, "tick_ms": args.tick_ms, "arrivals": args.arrivals,
            "rounds": rounds, "load": [round(x, 2) for x in os.getloadavg()]}


def render(r: dict[str, Any]) -> str:
    lines = ["| offered | round | path p50 / p99 / max ms | lost | floor p50 / p99 / max ms "
             "| worker / collector CPU-us per event | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["rounds"]:
        p, f = row["path"], row["floor"]
        cpu = p["cpu_us_per_event"]
        lines.append(
            f"| {p['offered_per_s']:,.0f}/s | {row['round']} | {p['p50']} / {p['p99']} / "
            f"{p['max']} | {p['lost']} of {p['arrivals']:,} | {f['p50']} / {f['p99']} / "
            f"{f['max']} | {cpu['worker']} / {cpu['collector']} "
            f"| {p['load'][0]:.1f}–{p['load'][1]:.1f} |")
    lines += ["", "| offered | round | POST -> stored | stored -> decided | decided -> sent "
              "| sent -> read |  (p50 / p99 ms)", "|---|---:|---:|---:|---:|---:|"]
    for row in r["rounds"]:
        p = row["path"]
        cells = [f"{v['p50']} / {v['p99']}" for v in p.get("stages", {}).values()]
        lines.append(f"| {p['offered_per_s']:,.0f}/s | {row['round']} | {' | '.join(cells)} |")
    lines.append(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in r['load'])}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="1000,5000",
                        help="offered loads, events/s (default 1000,5000)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per rate (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds offered first, and on until the triggers come within "
                             "200 ms (at most 60 s), counted for lost only (default 2)")
    parser.add_argument("--drain", type=float, default=10.0,
                        help="at the end, wait for the missing triggers until the topic is "
                             "quiet this long (default 10 s)")
    parser.add_argument("--tick-ms", type=int, default=10,
                        help="one POST per tick carries its events (default 10)")
    parser.add_argument("--arrivals", type=float, default=0.05,
                        help="share of events that are fresh promo arrivals (default 0.05)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--worker-args", default="",
                        help="more flags for the worker, e.g. \"--settle-interval 50ms\"")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.seconds <= 0 or args.tick_ms < 1 or not 0 < args.arrivals <= 1:
        parser.error("--seconds > 0, --tick-ms >= 1 and 0 < --arrivals <= 1")
    return run_on_broker("bench-path-", args, run, render)


if __name__ == "__main__":
    raise SystemExit(main())
