"""Worker latency at a fixed offered load (used by ``bench/worker.py``).

A fresh worker on the wall clock; events are offered at a fixed rate, ~10% of
them fire an arrival scene. Per trigger: ``decide`` = the worker's
``fired_at_ms`` minus the event's ts (its send time), ``e2e`` = a downstream
consumer receiving the trigger minus the event's ts.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from worker import PARTITIONS, create_topics, free_port, metric, start_worker, stop


async def offered_load(bootstrap: str, prefix: str, rate: int, seconds: float,
                       port: int) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds``; per-trigger latencies in ms."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    # Batched like the collector and `scenetrigger produce` send (linger 5 ms).
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    tps = [TopicPartition(f"{prefix}.triggers", p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    decide: list[float] = []
    e2e: list[float] = []
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
                    if trig["scene"] != "promo_arrival":
                        continue
                    decide.append(trig["fired_at_ms"] - trig["ts"])
                    e2e.append(now - trig["ts"])
            # After the load: read until the worker's backlog is drained.
            if done.is_set() and time.monotonic() - quiet_since > 3:
                return

    reader = asyncio.create_task(read())
    started = time.perf_counter()
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    try:
        while time.perf_counter() - started < seconds:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                user = f"l{rnd.randrange(20_000)}"
                ev: dict[str, Any] = {"user_id": user, "ts": int(time.time() * 1000)}
                if rnd.random() < 0.1:
                    ev.update(type="page", page="/promo/x")
                else:
                    ev.update(type="view", product_id=f"p{rnd.randrange(5_000)}")
                await producer.send(f"{prefix}.events", value=orjson.dumps(ev),
                                    key=user.encode())
                sent += 1
            next_at = started + tick * (1 + int((time.perf_counter() - started) / tick))
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await producer.flush()
        offered = sent / (time.perf_counter() - started)
        done.set()
        await asyncio.wait_for(reader, timeout=600)
    finally:
        await producer.stop()
        await consumer.stop()
    return {"rate": rate, "sent": sent, "offered_per_s": offered, "triggers": len(decide),
            "decide_ms": _pcts(decide), "e2e_ms": _pcts(e2e)}


def _pcts(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": -1.0, "p99": -1.0, "max": -1.0}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(max(values), 1)}


def offered_latency(tmp: Path, bootstrap: str, rate: int, seconds: float) -> dict[str, Any]:
    """A fresh worker on the wall clock under a fixed offered load."""
    lat_prefix = f"benchlat-{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topics(bootstrap, [f"{lat_prefix}.events", f"{lat_prefix}.ticks",
                                          f"{lat_prefix}.triggers",
                                          f"{lat_prefix}.dead-letters"]))
    port = free_port()
    log = tmp / f"{lat_prefix}.log"
    proc = start_worker(tmp, bootstrap, lat_prefix, lat_prefix, "wall", port, log)
    try:
        deadline = time.monotonic() + 180
        while metric(port, "scenetrigger_partitions") < PARTITIONS:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            time.sleep(0.2)
        result = asyncio.run(offered_load(bootstrap, lat_prefix, rate, seconds, port))
        result["worker_p99_bucket"] = _hist_p99(port)
        print(f"latency at {rate}/s: {result}", file=sys.stderr)
        return result
    finally:
        stop(proc)


def _hist_p99(port: int) -> str:
    """The worker's own histogram: the bucket bound that holds the 99th percentile."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return "?"
    buckets = []
    for line in text.splitlines():
        if line.startswith("scenetrigger_event_to_trigger_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((bound, float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return "?"
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= 0.99 * total:
            return f"<= {bound} s"
    return "?"
