"""Worker throughput and latency on a real Kafka.

1. **Drain**: the same N generated events (default 500k) are written twice,
   as one-event records keyed by ``user_id`` (any producer) and as the
   batched records the collector and ``scenetrigger produce`` write, and read
   in the same run, each round, by
   - ``raw``: a plain aiokafka consumer that only reads and orjson-decodes;
   - ``faust floor``: an empty Faust agent doing the same (Faust's own cost);
   - ``quix``: a Quix Streams app doing the repeat and arrival scenes with its
     RocksDB state and changelog, default settings (``bench/quix_peer.py``,
     in its own venv: ``--quix-python``);
   - ``worker``: one ``scenetrigger worker`` process (``--clock event``,
     RocksDB table, changelog, trigger sends) on the one-event records, then
     on the batched records (a fresh app id each time).
   The rate counts from the first event taken to the last (connect, group
   join and table recovery excluded for all).
2. **Latency** (``bench/worker_latency.py``): events offered at a fixed rate
   through ``scenetrigger collector`` (HTTP) to a fresh wall-clock worker.

Uses $SCENETRIGGER_KAFKA (host:port) or starts a broker with scripts/kafka.sh.

    make bench-worker BENCH_ARGS="--events 500000 --rounds 3"
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
from collections.abc import Callable, Sequence
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


RUNNERS = ("raw", "floor", "quix", "worker_one", "worker_batched")
LABELS = {
    "raw": "raw aiokafka consumer + orjson",
    "floor": "empty Faust agent (read + orjson, no table)",
    "quix": "Quix Streams 3.28 peer (repeat + arrival, RocksDB state + changelog, defaults)",
    "worker_one": "`scenetrigger worker` on one-event records",
    "worker_batched": "`scenetrigger worker` on batched records (what produce writes)",
}


@dataclass
class Rates:
    rates: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in RUNNERS})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in RUNNERS})


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


async def create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    from agents.producer import ensure_topics

    await ensure_topics(bootstrap, names, partitions)


async def fill(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    from agents.kafka_clients import new_producer

    producer = new_producer(bootstrap, acks=1, enable_idempotence=False, linger_ms=20,
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


async def fill_batched(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]],
                       partitions: int = PARTITIONS) -> float:
    """The same events as the collector and `scenetrigger produce` write them."""
    from agents.kafka_clients import new_producer
    from agents.record_batching import RecordBatcher

    producer = new_producer(bootstrap, acks=1, enable_idempotence=False, linger_ms=20,
                            max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        async def send(partition: int, key: bytes | None, value: bytes) -> Any:
            return await producer.send(topic, value=value, key=key, partition=partition)

        batcher = RecordBatcher(send, partitions)
        for key, value in events:
            await batcher.add(key, value)
        await batcher.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_drain(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    """(events/s, CPU seconds) of a plain consumer that reads and orjson-decodes
    every value."""
    from aiokafka import TopicPartition

    from agents.kafka_clients import new_reader

    consumer = new_reader(bootstrap)
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
                 log: Path, scenes: str = CONFIG, partitions: int = PARTITIONS,
                 state_dir: Path | None = None,
                 extra: Sequence[str] = (),
                 own_session: bool = False) -> subprocess.Popen[bytes]:
    """One worker; several of one app id (one consumer group) need a state_dir each.
    ``own_session``: a session of its own, as a service runs (with the kernel's
    autogroup scheduling, one session's processes share one CPU share)."""
    config = tmp / f"scenes-{app_id}.yaml"
    config.write_text(scenes)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "worker", "--broker", bootstrap,
             "--app-id", app_id, "--topic-prefix", prefix, "--partitions", str(partitions),
             "--state-dir", str(state_dir or tmp / f"state-{app_id}"), "--clock", clock,
             "--metrics-port", str(port), "--config", str(config), *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=own_session)


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


def quix_drain(python: str, bootstrap: str, topic: str, n: int, tmp: Path) -> tuple[float, float]:
    """(events/s, CPU seconds) of the Quix Streams peer (its own process and venv)."""
    state = tmp / f"quix-{uuid.uuid4().hex[:6]}"
    done = subprocess.run([python, str(REPO / "bench" / "quix_peer.py"), bootstrap, topic,
                           str(n), f"{topic}-quix-triggers", str(state)],
                          capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("rate ")]
    if not lines:
        raise RuntimeError(f"Quix peer failed:\n{done.stderr[-3000:]}")
    fields_ = lines[-1].split()
    return float(fields_[1]), float(fields_[3])


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
    """utime + stime of a live process, from /proc/<pid>/stat (-1 when gone)."""
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


def faust_floor(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    """Events/s of an empty Faust agent (same reads and orjson decoding as the
    raw consumer): what Faust's per-message path alone allows."""
    done = subprocess.run([sys.executable, __file__, "--faust-floor", bootstrap, topic, str(n)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("rate ")]
    if not lines:
        raise RuntimeError(f"empty Faust agent failed:\n{done.stderr[-3000:]}")
    fields_ = lines[-1].split()
    return float(fields_[1]), float(fields_[3])


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
                    print(f"rate {n / (time.perf_counter() - state['t0']):.1f} "
                          f"cpu {time.process_time():.1f}", flush=True)
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
    parser.add_argument("--quix-python", default=str(REPO / ".venv-quix" / "bin" / "python"),
                        help="python of the venv with quixstreams (make bench-worker builds it)")
    parser.add_argument("--skip", default="",
                        help="comma-separated runners to leave out: " + ",".join(RUNNERS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rates", default="5000,1000",
                        help="offered loads, events/s, one fresh worker each (default 5000,1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="offered-load duration")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    return run_on_broker("bench-worker-", args, run, render)


def run_on_broker(prefix: str, args: argparse.Namespace,
                  run: Callable[[argparse.Namespace, Path, str], dict[str, Any]],
                  render: Callable[[dict[str, Any]], str]) -> int:
    """A bench's ``run`` on $SCENETRIGGER_KAFKA or a broker of its own (stopped
    after), its table on stdout and, with ``--json``, its results in a file."""
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
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
    batched_prefix = f"{prefix}b"
    topic, batched_topic = f"{prefix}.events", f"{batched_prefix}.events"
    events = synthetic_events(args.events, int(time.time() * 1000) - args.events)
    names = [f"{p}.{t}" for p in (prefix, batched_prefix)
             for t in ("events", "ticks", "triggers", "dead-letters")]
    asyncio.run(create_topics(bootstrap, [*names, f"{topic}-quix-triggers"]))
    fill_s = asyncio.run(fill(bootstrap, topic, events))
    fill_b = asyncio.run(fill_batched(bootstrap, batched_topic, events))
    print(f"filled {topic} with {len(events):,} one-event records in {fill_s:.1f}s, "
          f"{batched_topic} with the same as batched records in {fill_b:.1f}s", file=sys.stderr)
    skip = set(filter(None, args.skip.split(",")))
    res = Rates()
    n = len(events)
    runs = {
        "raw": lambda: asyncio.run(raw_drain(bootstrap, topic, n)),
        "floor": lambda: faust_floor(bootstrap, topic, n),
        "quix": lambda: quix_drain(args.quix_python, bootstrap, topic, n, tmp),
        "worker_one": lambda: worker_drain(tmp, bootstrap, prefix, n, 900),
        "worker_batched": lambda: worker_drain(tmp, bootstrap, batched_prefix, n, 900),
    }
    kept = [r for r in RUNNERS if r not in skip]
    for i in range(args.rounds if kept else 0):  # --skip of every runner: latency only
        # Rotate the order each round: a neighbour's burst hits different runners.
        order = kept[i % len(kept):] + kept[:i % len(kept)]
        for runner in order:
            rate, cpu_s = runs[runner]()
            res.rates[runner].append(rate)
            res.cpu[runner].append(cpu_s)
            print(f"round {i + 1}: {runner} {rate:,.0f}/s ({cpu_s:.1f} CPU-s)", file=sys.stderr)
    from worker_latency import offered_latency  # imports this module: import late

    latency = [offered_latency(tmp, bootstrap, int(r), args.seconds)
               for r in args.rates.split(",") if r]
    return {"events": n, "rates": res.rates, "cpu_s": res.cpu, "ratios": ratios(res.rates),
            "latency": latency, "load": os.getloadavg()}


def ratios(rates: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per round, the ratios the goals name (same round: the same neighbours' load)."""
    pairs = {"batched/quix": ("worker_batched", "quix"), "one/floor": ("worker_one", "floor"),
             "batched/one": ("worker_batched", "worker_one"), "quix/floor": ("quix", "floor")}
    out = {}
    for name, (a, b) in pairs.items():
        if rates[a] and len(rates[a]) == len(rates[b]):
            out[name] = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
    return out


def render(r: dict[str, Any]) -> str:
    def span(xs: list[float], fmt: str = ",.0f") -> str:
        if not xs:
            return "–"
        return (f"{statistics.median(xs):{fmt}} "
                f"({min(xs):{fmt}}–{max(xs):{fmt}})")

    lines = [
        f"| drain of {r['events']:,} events (4 partitions) | events/s, median (range) "
        "| CPU-s per run |",
        "|---|---:|---:|",
    ]
    for runner in RUNNERS:
        lines.append(f"| {LABELS[runner]} | {span(r['rates'][runner])} "
                     f"| {span(r['cpu_s'][runner], '.1f')} |")
    lines += ["", "| ratio, per round | median (range) |", "|---|---:|"]
    for name, values in r["ratios"].items():
        lines.append(f"| {name} | {span(values, '.2f')} |")
    lines += [
        "",
        "| offered through the collector | events | arrival triggers | decide p50 / p99 ms "
        "| end to end p50 / p99 ms | absence timers | timer lag p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lat in r["latency"]:
        d, e, t = lat["decide_ms"], lat["e2e_ms"], lat["timer_lag_ms"]
        lines.append(
            f"| {lat['offered_per_s']:,.0f}/s | {lat['sent']:,} | {lat['triggers']:,} "
            f"| {d['p50']} / {d['p99']} | {e['p50']} / {e['p99']} | {lat['timers']:,} "
            f"| {t['p50']} / {t['p99']} |")
    lines.append(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in r['load'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
