"""Worker latency at a fixed offered load, through the HTTP collector (used by
``bench/worker.py``).

A fresh worker on the wall clock and a ``scenetrigger collector`` in front of
it; every 10 ms the events of that tick are POSTed as one JSON array (the
collector batches them into records). ~10% fire an arrival scene, ~5% are
carts arming an absence timer of 2 s (no purchases, so each fires). Per
arrival trigger: ``decide`` = the worker's ``fired_at_ms`` minus the event's ts
(its send time), ``e2e`` = a downstream consumer receiving the trigger minus
the event's ts. Per absence trigger: timer lag = ``fired_at_ms`` minus its
deadline (the trigger's ts).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from worker import CONFIG, PARTITIONS, REPO, create_topics, free_port, metric, start_worker, stop

TOKEN = "bench-token"  # a throwaway token for the bench's own collector
LATENCY_CONFIG = CONFIG.replace("after: 30m", "after: 2s")
ABSENCE_AFTER_MS = 2_000


async def offered_load(collector: str, bootstrap: str, prefix: str, rate: int,
                       seconds: float) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds`` through the collector; per-trigger
    latencies in ms."""
    import aiohttp
    from aiokafka import TopicPartition

    from agents.kafka_clients import new_consumer

    consumer = new_consumer(bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(f"{prefix}.triggers", p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    decide: list[float] = []
    e2e: list[float] = []
    lag: list[float] = []
    rnd = random.Random(11)
    sent = 0
    done = asyncio.Event()

    async def read() -> None:
        quiet_since = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time() * 1000
            if batch:
                quiet_since = time.monotonic()
            for records in batch.values():
                for rec in records:
                    trig = orjson.loads(rec.value)
                    if trig["scene"] == "promo_arrival":
                        decide.append(trig["fired_at_ms"] - trig["ts"])
                        e2e.append(now - trig["ts"])
                    elif trig["scene"] == "cart_abandonment":
                        lag.append(trig["fired_at_ms"] - trig["ts"])
            # After the load: read until the backlog and the last timers are out.
            if done.is_set() and time.monotonic() - quiet_since > 3 + ABSENCE_AFTER_MS / 1000:
                return

    reader = asyncio.create_task(read())
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    posts: set[asyncio.Task[None]] = set()
    failures = 0

    async def post(session: aiohttp.ClientSession, body: bytes) -> None:
        nonlocal failures
        async with session.post(collector, data=body, headers=headers) as resp:
            if resp.status != 202:
                failures += 1
            await resp.read()

    started = time.perf_counter()
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    try:
        async with aiohttp.ClientSession() as session:
            while time.perf_counter() - started < seconds:
                owed += per_tick
                batch: list[dict[str, Any]] = []
                while owed >= 1:
                    owed -= 1
                    user = f"l{rnd.randrange(20_000)}"
                    ev: dict[str, Any] = {"user_id": user, "ts": int(time.time() * 1000)}
                    r = rnd.random()
                    if r < 0.1:
                        ev.update(type="page", page="/promo/x")
                    elif r < 0.15:
                        ev.update(type="cart", product_id=f"p{rnd.randrange(5_000)}")
                    else:
                        ev.update(type="view", product_id=f"p{rnd.randrange(5_000)}")
                    batch.append(ev)
                if batch:
                    sent += len(batch)
                    task = asyncio.create_task(post(session, orjson.dumps(batch)))
                    posts.add(task)
                    task.add_done_callback(posts.discard)
                next_at = started + tick * (1 + int((time.perf_counter() - started) / tick))
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if posts:
                await asyncio.gather(*posts)
        offered = sent / (time.perf_counter() - started)
        done.set()
        await asyncio.wait_for(reader, timeout=600)
    finally:
        await consumer.stop()
    return {"rate": rate, "sent": sent, "offered_per_s": offered, "triggers": len(decide),
            "failed_posts": failures, "timers": len(lag), "decide_ms": _pcts(decide),
            "e2e_ms": _pcts(e2e), "timer_lag_ms": _pcts(lag)}


def _pcts(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": -1.0, "p99": -1.0, "max": -1.0}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(max(values), 1)}


def start_collector(bootstrap: str, prefix: str, port: int, log: Path,
                    own_session: bool = False) -> subprocess.Popen[bytes]:
    """One collector; ``own_session`` as for ``start_worker``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "collector", "--broker", bootstrap,
             "--port", str(port), "--topic", f"{prefix}.events",
             "--dead-letter-topic", f"{prefix}.dead-letters", "--partitions", str(PARTITIONS)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SCENETRIGGER_COLLECTOR_TOKEN": TOKEN},
            start_new_session=own_session)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def offered_latency(tmp: Path, bootstrap: str, rate: int, seconds: float) -> dict[str, Any]:
    """A fresh wall-clock worker and a collector under a fixed offered load."""
    lat_prefix = f"benchlat-{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topics(bootstrap, [f"{lat_prefix}.events", f"{lat_prefix}.ticks",
                                          f"{lat_prefix}.triggers",
                                          f"{lat_prefix}.dead-letters"]))
    port, http_port = free_port(), free_port()
    log = tmp / f"{lat_prefix}.log"
    proc = start_worker(tmp, bootstrap, lat_prefix, lat_prefix, "wall", port, log,
                        LATENCY_CONFIG)
    collector = start_collector(bootstrap, lat_prefix, http_port, tmp / f"{lat_prefix}-c.log")
    try:
        deadline = time.monotonic() + 180
        while metric(port, "scenetrigger_partitions") < PARTITIONS or not _healthy(http_port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            time.sleep(0.2)
        result = asyncio.run(offered_load(f"http://127.0.0.1:{http_port}/events", bootstrap,
                                          lat_prefix, rate, seconds))
        print(f"latency at {rate}/s: {result}", file=sys.stderr)
        return result
    finally:
        stop(collector)
        stop(proc)
