"""Worker throughput and latency on a real Kafka.

1. **Drain**: a 4-partition topic pre-filled with N synthetic events (default
   500k) is read, in the same run, by
   - ``raw``: a plain aiokafka consumer that only reads and orjson-decodes;
   - ``faust floor``: an empty Faust agent doing the same (Faust's own cost);
   - ``worker``: one ``scenetrigger worker`` process (``--clock event``,
     RocksDB table, changelog, trigger sends) draining the topic from the
     start (a fresh app id each round).
   The rate counts from the first event taken to the last (connect, group
   join and table recovery excluded on both sides).
2. **Latency** (``bench/worker_latency.py``): a fresh worker (wall clock)
   per offered load (default 5,000/s and 1,000/s for 20 s each).

Uses $SCENETRIGGER_KAFKA (host:port) or starts a broker with scripts/kafka.sh.

    .venv/bin/python bench/worker.py --events 500000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4

CONFIG = """
scenes:
  repeat_view_no_purchase:
    kind: repeat
    when: {type: view}
    per: product_id
    count: 3
    within: 30m
    unless: {type: purchase}
    cooldown: 24h
  cart_abandonment:
    kind: absence
    start: {type: cart}
    cancel: {type: purchase}
    after: 30m
  promo_arrival:
    kind: arrival
    when: {page: {prefix: /promo}}
"""


@dataclass
class Rates:
    raw: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    worker: list[float] = field(default_factory=list)


def synthetic_events(n: int, start_ms: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """Keyed events: 50k users, 5k products; views 80%, promo pages 10%, carts 7%,
    purchases 3%; ts rising 1 ms per event."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        user = f"u{rnd.randrange(50_000)}"
        r = rnd.random()
        ev: dict[str, Any] = {"user_id": user, "ts": start_ms + i}
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


async def create_topics(bootstrap: str, names: list[str]) -> None:
    from agents.producer import ensure_topics

    await ensure_topics(bootstrap, names, PARTITIONS)


async def fill(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                                max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for key, value in events:
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_drain(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    """(events/s, CPU seconds) of a plain consumer that reads and orjson-decodes
    every value."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first = 0.0
        cpu0 = time.process_time()
        loads = orjson.loads
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                if not seen and records:
                    first = time.perf_counter()
                for rec in records:
                    loads(rec.value)
                seen += len(records)
        return n / (time.perf_counter() - first), time.process_time() - cpu0
    finally:
        await consumer.stop()


def metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_worker(tmp: Path, bootstrap: str, prefix: str, app_id: str, clock: str, port: int,
                 log: Path) -> subprocess.Popen[bytes]:
    config = tmp / "scenes.yaml"
    config.write_text(CONFIG)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli", "worker", "--broker", bootstrap,
             "--app-id", app_id, "--topic-prefix", prefix, "--partitions", str(PARTITIONS),
             "--state-dir", str(tmp / f"state-{app_id}"), "--clock", clock,
             "--metrics-port", str(port), "--config", str(config)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def worker_drain(tmp: Path, bootstrap: str, events_topic_prefix: str, n: int,
                 timeout_s: float) -> tuple[float, float]:
    """(events/s, worker CPU seconds) of one worker draining the pre-filled topic."""
    app_id = f"{events_topic_prefix}-w{uuid.uuid4().hex[:6]}"
    port = free_port()
    log = tmp / f"{app_id}.log"
    # A fresh app id (consumer group, changelog) reads the filled topic from the start.
    proc = start_worker(tmp, bootstrap, events_topic_prefix, app_id, "event", port, log)
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
                return (n - first_n) / (now - first_t), cpu
            # Each scrape costs the worker a few ms of CPU (its metrics thread):
            # at 10/s that was ~5% of it. 0.5 s is < 0.5% of a 500k drain.
            time.sleep(0.5)
        raise RuntimeError(f"worker did not drain {n} events in {timeout_s}s")
    finally:
        stop(proc)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


def start_kafka(tmp: Path) -> tuple[str, dict[str, str] | None]:
    external = os.environ.get("SCENETRIGGER_KAFKA", "").strip()
    if external:
        return external, None
    env = {**os.environ, "SCENETRIGGER_KAFKA_RUN_DIR": str(tmp / "kafka")}
    done = subprocess.run([str(REPO / "scripts" / "kafka.sh"), "start", "--fresh"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"kafka did not start:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1], env


def faust_floor(bootstrap: str, topic: str, n: int) -> float:
    """Events/s of an empty Faust agent (same reads and orjson decoding as the
    raw consumer): what Faust's per-message path alone allows."""
    done = subprocess.run([sys.executable, __file__, "--faust-floor", bootstrap, topic, str(n)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("rate ")]
    if not lines:
        raise RuntimeError(f"empty Faust agent failed:\n{done.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def _run_faust_floor(bootstrap: str, topic: str, n: int) -> None:
    import faust

    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        app = faust.App(f"floor-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}",
                        autodiscover=False, key_serializer="raw", value_serializer="raw",
                        web_enabled=False, topic_partitions=PARTITIONS, datadir=tmp,
                        stream_wait_empty=False)
        source = app.topic(topic, key_type=bytes, value_type=bytes, partitions=PARTITIONS)
        state = {"n": 0, "t0": 0.0}

        async def read(stream: Any) -> None:
            async for value in stream:
                if not state["n"]:
                    state["t0"] = time.perf_counter()
                orjson.loads(value)
                state["n"] += 1
                if state["n"] >= n:
                    print(f"rate {n / (time.perf_counter() - state['t0']):.1f}", flush=True)
                    os._exit(0)

        app.agent(source, name="floor", concurrency=1)(read)
        worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
        worker.spinner = None  # it would set the root logger to DEBUG
        worker.execute_from_commandline()


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--faust-floor":
        sys.path.insert(0, str(REPO))
        _run_faust_floor(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rates", default="5000,1000",
                        help="offered loads, events/s, one fresh worker each (default 5000,1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="offered-load duration")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp_name:
        tmp = Path(tmp_name)
        bootstrap, kafka_env = start_kafka(tmp)
        try:
            result = run(args, tmp, bootstrap)
        finally:
            if kafka_env is not None:
                subprocess.run([str(REPO / "scripts" / "kafka.sh"), "stop"], env=kafka_env,
                               capture_output=True, timeout=60, check=False)
    print(render(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


def run(args: argparse.Namespace, tmp: Path, bootstrap: str) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}.events"
    events = synthetic_events(args.events, int(time.time() * 1000) - args.events)
    asyncio.run(create_topics(bootstrap, [topic, f"{prefix}.ticks", f"{prefix}.triggers",
                                          f"{prefix}.dead-letters"]))
    fill_s = asyncio.run(fill(bootstrap, topic, events))
    print(f"filled {topic} with {len(events):,} events in {fill_s:.1f}s", file=sys.stderr)
    rates = Rates()
    cpu: list[float] = []
    raw_cpu: list[float] = []
    for i in range(args.rounds):
        raw_rate, raw_cpu_s = asyncio.run(raw_drain(bootstrap, topic, len(events)))
        rates.raw.append(raw_rate)
        raw_cpu.append(raw_cpu_s)
        print(f"round {i + 1}: raw {rates.raw[-1]:,.0f}/s", file=sys.stderr)
        rates.floor.append(faust_floor(bootstrap, topic, len(events)))
        print(f"round {i + 1}: empty Faust agent {rates.floor[-1]:,.0f}/s", file=sys.stderr)
        rate, cpu_s = worker_drain(tmp, bootstrap, prefix, len(events), 900)
        rates.worker.append(rate)
        cpu.append(cpu_s)
        print(f"round {i + 1}: worker {rate:,.0f}/s", file=sys.stderr)
    from worker_latency import offered_latency  # imports this module: import late

    latency = [offered_latency(tmp, bootstrap, int(r), args.seconds)
               for r in args.rates.split(",")]
    return {"events": len(events), "raw_per_s": rates.raw, "faust_floor_per_s": rates.floor,
            "worker_per_s": rates.worker,
            "worker_cpu_s": cpu, "raw_cpu_s": raw_cpu, "ratio": statistics.median(rates.worker)
            / statistics.median(rates.raw), "latency": latency, "load": os.getloadavg()}


def render(r: dict[str, Any]) -> str:
    def span(xs: list[float]) -> str:
        return f"{statistics.median(xs):,.0f}/s (runs: {', '.join(f'{x:,.0f}' for x in xs)})"

    lines = [
        f"| drain of {r['events']:,} events (4 partitions) | events/s |",
        "|---|---|",
        f"| raw aiokafka consumer + orjson | {span(r['raw_per_s'])} |",
        f"| empty Faust agent (read + orjson, no table) | {span(r['faust_floor_per_s'])} |",
        f"| `scenetrigger worker` (1 process) | {span(r['worker_per_s'])} |",
        f"| ratio worker / raw (medians) | {r['ratio']:.3f} |",
        "",
        "CPU seconds per run (worker: whole process incl. start-up and recovery): raw "
        + ", ".join(f"{x:.1f}" for x in r["raw_cpu_s"]) + "; worker "
        + ", ".join(f"{x:.1f}" for x in r["worker_cpu_s"]),
        "",
        "| offered load | events | arrival triggers | decide p50 / p99 (ms) "
        "| end to end p50 / p99 (ms) | worker histogram p99 |",
        "|---|---|---|---|---|---|",
    ]
    for lat in r["latency"]:
        d, e = lat["decide_ms"], lat["e2e_ms"]
        lines.append(
            f"| {lat['offered_per_s']:,.0f}/s | {lat['sent']:,} | {lat['triggers']:,} "
            f"| {d['p50']} / {d['p99']} | {e['p50']} / {e['p99']} | {lat['worker_p99_bucket']} |")
    lines.append(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in r['load'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
