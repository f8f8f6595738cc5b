"""A Kafka broker stop/start under load (issue 11), with a broker of its own
(not the shared one): the scene worker and `deliver` run through it, events
keep being offered while it is down (the producer retries), and after the
restart every trigger is delivered, 0 lost. A process that exits because
Kafka refused it (the worker's exit 75) is started again, as the compose
file's `restart: unless-stopped` would. `journeys` runs beside them: each
trigger enrols its user in a one-step journey whose send `deliver` sends
too, so a lost trigger or a lost action shows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer

from agents.producer import ensure_topics
from tests.agents.worker_support import WorkerProcess, start_worker, unique
from tests.channels.receivers import serve_app
from tests.channels.test_deliver_kafka import PRODUCTS, start_deliver
from tests.services import KAFKA_SCRIPT, REPO, free_port, start_kafka, start_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
USERS = 120
SCENE = "promo_arrival"


def _kafka(run_dir: Path, command: str, port: str | None = None) -> None:
    env = {**os.environ, "SCENETRIGGER_KAFKA_RUN_DIR": str(run_dir),
           "SCENETRIGGER_KAFKA_TIMEOUT": "150"}
    if port is not None:
        env["SCENETRIGGER_KAFKA_PORT"] = port
    done = subprocess.run([str(KAFKA_SCRIPT), command], env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr + done.stdout


async def test_a_broker_restart_under_load_loses_no_trigger(tmp_path: Path) -> None:
    run_dir = tmp_path / "kafka"
    broker = start_kafka(run_dir)
    port = broker.bootstrap.rpartition(":")[2]
    redis = start_redis(tmp_path / "redis", aof=True)
    run = unique("brk")
    got: set[str] = set()  # users whose scene message arrived
    journeyed: set[str] = set()  # users whose journey message arrived

    async def hook(request: Any) -> web.Response:
        body = orjson.loads(await request.read())
        (got if body.get("scene") == SCENE else journeyed).add(body["user_id"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    procs: list[WorkerProcess] = []
    try:
        async with serve_app(app) as base:
            config = tmp_path / "config.yaml"
            config.write_text(yaml.safe_dump({
                "scenes": {SCENE: {"kind": "arrival", "when": {"page": {"prefix": "/promo"}}}},
                "channels": {"webhook": {"type": "webhook", "url": base + "/hook",
                                         "secret_env": "DELIVER_TEST_SECRET"}},
                "content": {"scenes": {SCENE: {"fallback": {
                    "channels": ["webhook"], "subject": "Sale", "text": "On now."}}},
                    "journeys": {"follow_1": {"fallback": {
                        "channels": ["webhook"], "subject": "Still on", "text": "Look."}}}},
                "strategies": {"journeys": {"follow": {
                    "entry": {"scene": SCENE},
                    "steps": [{"id": "s1", "send": {"channel": "webhook",
                                                    "content": "follow_1"}}]}},
                    "control": {"share": 0}},
                "delivery": {"default_timezone": "UTC", "quiet_hours": {"enabled": False},
                             "caps": {"per_day": None, "per_week": None},
                             "redis_prefix": f"{run}:"}}))
            catalog = tmp_path / "catalog.jsonl"
            catalog.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PRODUCTS))
            await ensure_topics(broker.bootstrap, [f"{run}.events", f"{run}.triggers",
                                                   f"{run}.journey-actions"], 4)

            def worker(n: int) -> WorkerProcess:
                proc = start_worker(tmp_path, f"w{n}", broker.bootstrap, run, run,
                                    ["--clock", "event", "--store", "memory"], config)
                procs.append(proc)
                return proc

            def deliver(n: int) -> WorkerProcess:
                proc = start_deliver(tmp_path, f"d{n}", broker.bootstrap, run, f"{run}-d",
                                     config, catalog, redis.url)
                procs.append(proc)
                return proc

            def journeys(n: int) -> WorkerProcess:
                log_path = tmp_path / f"journeys-{n}.log"
                with open(log_path, "wb") as log:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "scenetrigger.cli.main", "journeys", "--config",
                         str(config), "--broker", broker.bootstrap, "--topic-prefix", run,
                         "--redis-url", redis.url, "--redis-prefix", f"{run}j:",
                         "--metrics-port", str(free_port()), "--tick-interval", "0.2"],
                        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
                proc = WorkerProcess(f"j{n}", process, 0, log_path)
                procs.append(proc)
                return proc

            starters = {"worker": worker, "deliver": deliver, "journeys": journeys}
            live = {name: start(0) for name, start in starters.items()}
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                        request_timeout_ms=120_000,
                                        retry_backoff_ms=500)
            await producer.start()
            now = int(time.time() * 1000)
            try:
                sends = []
                for i in range(USERS):
                    user = f"u{i}"
                    event = {"user_id": user, "ts": now + i, "type": "page",
                             "page": f"/promo/{i}"}
                    if i == USERS // 2:  # half offered, the rest while the broker is down
                        await producer.flush()
                        await _until(lambda: len(got) >= USERS // 4, 120, live)
                        await asyncio.to_thread(_kafka, run_dir, "stop")
                        restart = asyncio.create_task(asyncio.to_thread(
                            _kafka, run_dir, "start", port))
                    sends.append(await producer.send(f"{run}.events", orjson.dumps(event),
                                                     key=user.encode()))
                await restart
                await asyncio.gather(*sends)
            finally:
                await producer.stop()
            restarts = 0
            deadline = time.monotonic() + 180
            while (len(got) < USERS or len(journeyed) < USERS) and time.monotonic() < deadline:
                for name, proc in list(live.items()):
                    if not proc.alive():  # exit 75 (Kafka refused it): the supervisor's job
                        restarts += 1
                        live[name] = starters[name](restarts)
                await asyncio.sleep(0.5)
    finally:
        for proc in procs:
            if proc.alive():
                await asyncio.to_thread(proc.stop)
        redis.stop()
        broker.stop()
    users = {f"u{i}" for i in range(USERS)}
    lost, lost_journeys = users - got, users - journeyed
    print(f"broker stop/start: sent {USERS} trigger-making events, scene messages "
          f"delivered {len(got)}, journey messages {len(journeyed)}, lost "
          f"{len(lost)} + {len(lost_journeys)}, process restarts {restarts}")
    assert lost == set(), sorted(lost)[:10]
    assert lost_journeys == set(), sorted(lost_journeys)[:10]


async def _until(check: Any, timeout_s: float, live: dict[str, WorkerProcess]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "\n".join(p.log_tail() for p in live.values())
        for proc in live.values():
            assert proc.alive(), proc.log_tail()
        await asyncio.sleep(0.25)
