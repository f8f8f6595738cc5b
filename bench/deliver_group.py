"""`scenetrigger deliver` scale-out on a Redis Cluster: 1 then 2 processes
in one consumer group, on the same number of triggers, against a webhook.

Starts (unless given) a Kafka broker (scripts/kafka.sh) and a Redis Cluster
of 3 masters + 3 replicas (scripts/redis.sh start --cluster); the deliver
processes get one node's plain redis:// URL. Per run: a fresh topic with
``--partitions`` partitions, the deliver processes started and given time to
join, then ``--triggers`` triggers of distinct users produced. Measured from
the first message the webhook receives to the last: triggers/s, CPU seconds
of the deliver processes per 1,000 triggers, duplicates (by Idempotency-Key)
and each process's share (its own ``scenetrigger_deliver_records``).

    .venv/bin/python bench/deliver_group.py --triggers 4000 --partitions 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from deliver import free_port  # bench/ is the script's directory
from worker import REPO, _cpu_seconds, start_kafka

from triggers.events import Trigger
from triggers.wire import encode_trigger

SCENE = "promo_arrival"


class Sink:
    def __init__(self) -> None:
        self.keys: list[str] = []
        self.first = self.last = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        return web.Response(text="ok")


def config(url: str, run: str) -> dict[str, Any]:
    return {
        "scenes": {SCENE: {"kind": "arrival", "when": {"page": {"prefix": "/promo"}}}},
        "channels": {"webhook": {"type": "webhook", "url": url, "secret_env": "BENCH_SECRET",
                                 "timeout": "5s"}},
        "content": {"scenes": {SCENE: {"fallback": {"channels": ["webhook"],
                                                    "subject": "Sale", "text": "On now."}}}},
        "delivery": {"default_timezone": "UTC", "quiet_hours": {"enabled": False},
                     "caps": {"per_day": None, "per_week": None},
                     "backoff": {"ignored": 1_000_000}, "redis_prefix": f"{run}:"},
    }


def records(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("scenetrigger_deliver_records_total{"))


def log_tails(tmp: Path, run: str) -> str:
    return "".join(f.read_text(errors="replace")[-3000:] for f in tmp.glob(f"{run}-*.log"))


def spawn(log_path: Path, cfg: Path, catalog: Path, bootstrap: str, run: str,
          redis_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("scenetrigger")), "deliver", "--config",
             str(cfg), "--broker", bootstrap, "--topic-prefix", run, "--group", f"{run}-g",
             "--redis-url", redis_url, "--catalog", str(catalog), "--metrics-port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "BENCH_SECRET": "s"})
    return proc, port


async def one_run(processes: int, args: argparse.Namespace, bootstrap: str, redis_url: str,
                  tmp: Path, sink: Sink, hook: str) -> dict[str, Any]:
    from agents.kafka_clients import new_producer
    from agents.producer import ensure_topics

    run = f"dg{uuid.uuid4().hex[:6]}"
    cfg = tmp / f"{run}.yaml"
    cfg.write_text(yaml.safe_dump(config(hook, run)))
    catalog = tmp / "catalog.jsonl"
    catalog.write_bytes(orjson.dumps({"product_id": "p1", "name": "P", "price": "1"}) + b"\n")
    await ensure_topics(bootstrap, [f"{run}.triggers", f"{run}.journey-actions"],
                        args.partitions)
    procs = [await asyncio.to_thread(spawn, tmp / f"{run}-{n}.log", cfg, catalog, bootstrap,
                                     run, redis_url) for n in range(processes)]
    try:
        await asyncio.sleep(args.join_wait)  # every process in the group before the load
        sink.keys.clear()
        sink.first = sink.last = 0.0
        cpu0 = sum(_cpu_seconds(p.pid) for p, _ in procs)
        now = int(time.time() * 1000)
        producer = new_producer(bootstrap)  # as the project writes triggers
        await producer.start()
        try:
            for i in range(args.triggers):
                trig = Trigger(SCENE, f"u{i}", f"/promo/{i}", now + i)
                await producer.send(f"{run}.triggers", encode_trigger(trig, now),
                                    key=trig.user_id.encode())
            await producer.flush()
        finally:
            await producer.stop()
        deadline = time.monotonic() + args.timeout
        while len(set(sink.keys)) < args.triggers and time.monotonic() < deadline:
            for proc, _ in procs:
                if proc.poll() is not None:
                    logs = await asyncio.to_thread(log_tails, tmp, run)
                    raise SystemExit(f"deliver exited {proc.returncode}:\n{logs}")
            await asyncio.sleep(0.1)
        cpu = sum(_cpu_seconds(p.pid) for p, _ in procs) - cpu0
        shares = [records(port) for _, port in procs]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=30)
    unique = len(set(sink.keys))
    seconds = max(sink.last - sink.first, 1e-9)
    return {"processes": processes, "triggers": args.triggers, "received": unique,
            "duplicates": len(sink.keys) - unique, "seconds": round(seconds, 2),
            "per_second": round(unique / seconds), "cpu_s_per_1k": round(1000 * cpu / unique, 3),
            "records_by_process": shares}


async def bench(args: argparse.Namespace, bootstrap: str, redis_url: str,
                tmp: Path) -> list[dict[str, Any]]:
    sink = Sink()
    app = web.Application()
    app.router.add_post("/hook", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return [await one_run(n, args, bootstrap, redis_url, tmp, sink,
                              f"http://127.0.0.1:{port}/hook")
                for _ in range(args.rounds) for n in (1, 2)]
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triggers", type=int, default=4000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--join-wait", type=float, default=12.0,
                        help="seconds for the processes to join the group before the load")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--redis-url", help="a Redis Cluster node instead of starting one")
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deliver-group-") as name:
        tmp = Path(name)
        bootstrap, kafka_env = start_kafka(tmp)
        redis_env = {**os.environ, "SCENETRIGGER_REDIS_RUN_DIR": str(tmp / "redis")}
        script = str(REPO / "scripts" / "redis.sh")
        try:
            redis_url = args.redis_url or subprocess.run(
                [script, "start", "--cluster"], env=redis_env, capture_output=True, text=True,
                timeout=180, check=True).stdout.strip().splitlines()[-1]
            results = asyncio.run(bench(args, bootstrap, redis_url, tmp))
        finally:
            if not args.redis_url:
                subprocess.run([script, "stop"], env=redis_env, capture_output=True,
                               timeout=60, check=False)
            if kafka_env is not None:
                subprocess.run([str(REPO / "scripts" / "kafka.sh"), "stop"], env=kafka_env,
                               capture_output=True, timeout=120, check=False)
    for row in results:
        if args.json:
            print(orjson.dumps(row).decode())
        else:
            print(f"{row['processes']} deliver: {row['received']:,} of {row['triggers']:,} in "
                  f"{row['seconds']} s = {row['per_second']:,}/s, "
                  f"{row['cpu_s_per_1k']} CPU-s per 1k, {row['duplicates']} duplicates, "
                  f"records by process {row['records_by_process']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
