"""A three-node KRaft cluster (issue 18), each node a broker and a controller,
its brokers left at default.replication.factor=1: `produce` and the worker,
started with no replication flag, create every topic (Faust's changelog and
leader topic too) with 3 replicas and min.insync.replicas 2. The node that
leads the most events partitions is killed (-9) while events stream in; the
worker goes on, and its triggers (deduplicated by trigger_id) equal
replay's. The node is started again and rejoins every partition's ISR.
Then `deliver` and `journeys` join the worker and the busiest node is killed
again: every user still gets both messages."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.agents.test_worker_failover import WORKER_ARGS
from tests.agents.test_worker_replay import COMPARED, CONFIG, SAMPLE
from tests.agents.worker_support import (
    WorkerProcess,
    all_committed,
    assert_same_triggers,
    read_topic,
    replay_keys,
    start_cli,
    start_worker,
    trigger_keys,
    unique,
    wait_for,
)
from tests.channels.receivers import serve_app
from tests.channels.test_deliver_kafka import PRODUCTS, start_deliver, until
from tests.services import REPO, KafkaBroker, ServiceStartError, free_port, start_kafka

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    run_dir = tmp_path_factory.mktemp("kafka-cluster")
    try:
        broker = start_kafka(run_dir, nodes=NODES)
    except ServiceStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


async def _topics(bootstrap: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Each topic named after ``prefix``: its partitions (leader, replicas,
    isr) and its min.insync.replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(n for n in await admin.list_topics() if n.startswith(prefix))
        described = {t["topic"]: t["partitions"] for t in await admin.describe_topics(names)}
        configs: dict[str, str] = {}
        for response in await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
            for res in response.to_object()["resources"]:
                for entry in res["config_entries"]:
                    if entry["config_names"] == "min.insync.replicas":
                        configs[res["resource_name"]] = entry["config_value"]
        return {n: {"partitions": described[n], "min_insync": configs.get(n)} for n in names}
    finally:
        await admin.close()


def topics(bootstrap: str, prefix: str) -> dict[str, dict[str, Any]]:
    return asyncio.run(_topics(bootstrap, prefix))


def test_kill_the_busiest_node_of_three(cluster: KafkaBroker, tmp_path: Path) -> None:
    bootstrap = cluster.bootstrap
    config = tmp_path / "scenes.yaml"
    config.write_text(CONFIG)
    expected = trigger_keys(
        [{"scene": s, "user_id": u, "key": k, "ts": t}
         for s, u, k, t in replay_keys(SAMPLE, config, tmp_path)], COMPARED)
    assert max(expected.values()) == 1  # replay has no duplicates: dedupe is exact

    prefix = unique("t-cluster")
    worker = start_worker(tmp_path, "a", bootstrap, prefix, prefix, WORKER_ARGS, config)
    producer: subprocess.Popen[bytes] | None = None
    killed = 0
    try:
        wait_for("the worker to own all 4 partitions",
                 lambda: worker.metric("scenetrigger_partitions") == 4, 150, [worker])
        with open(tmp_path / "produce.log", "wb") as log:
            producer = subprocess.Popen(  # no replication flag; its own rejects topic
                [sys.executable, "-m", "scenetrigger.cli.main", "produce", str(SAMPLE), "--broker",
                 bootstrap, "--topic", f"{prefix}.events", "--dead-letter-topic",
                 f"{prefix}.produce-rejects", "--rate", "1000", "--no-progress"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wait_for("the worker to take some events",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted") >= 1500,
                 90, [worker], interval_s=0.1)

        created = topics(bootstrap, prefix)
        wanted = {f"{prefix}.{t}" for t in ("events", "ticks", "triggers", "dead-letters",
                                            "decisions", "produce-rejects")}
        wanted |= {f"{prefix}-user-state-changelog", f"{prefix}-__assignor-__leader"}
        assert wanted <= set(created), sorted(set(created))
        for name, topic in created.items():
            assert {len(p["replicas"]) for p in topic["partitions"]} == {3}, name
            assert topic["min_insync"] == "2", (name, topic["min_insync"])

        leaders = Counter(p["leader"] for p in created[f"{prefix}.events"]["partitions"])
        killed = leaders.most_common(1)[0][0]
        taken_before = worker.metric("scenetrigger_events_total", result="accepted")
        cluster.kill_node(killed)

        assert producer.wait(timeout=120) == 0, (tmp_path / "produce.log").read_text()
        wait_for("committed offsets at the ends", lambda: all_committed(
            bootstrap, prefix, f"{prefix}.events"), 150, [worker], interval_s=0.5)
        records = read_topic(bootstrap, f"{prefix}.triggers")
        moved = {p["partition"]: p["leader"] for p in
                 topics(bootstrap, f"{prefix}.events")[f"{prefix}.events"]["partitions"]}
    finally:
        if producer is not None and producer.poll() is None:
            producer.kill()
            producer.wait(timeout=10)
        worker.stop()
    assert taken_before < 8721  # the node died with events still to come
    assert killed not in moved.values()  # its partitions have other leaders
    repeated = assert_same_triggers(records, expected, COMPARED)

    cluster.start_missing()

    def back_in_every_isr() -> bool:
        found = topics(bootstrap, prefix)
        return all(killed in p["isr"] for t in found.values() for p in t["partitions"])

    wait_for(f"node {killed} back in every ISR", back_in_every_isr, 120, interval_s=1)
    print(f"killed node {killed} (led {leaders[killed]} of 4 events partitions) after "
          f"{taken_before:.0f} events; {repeated} duplicate triggers")


USERS = 120
SCENE = "promo_arrival"


async def test_deliver_and_journeys_go_on_when_the_busiest_node_dies(
        cluster: KafkaBroker, tmp_path: Path, redis_url: str) -> None:
    """The worker, `deliver` and `journeys` (no replication flag) on the
    cluster: the busiest events node is killed after a quarter of the users'
    messages arrived; every user still gets the scene's message and the
    journey's, and every topic they created has 3 replicas."""
    bootstrap = cluster.bootstrap
    run = unique("t-cl-dlv")
    got: Counter[str] = Counter()  # scene messages per user
    journeyed: Counter[str] = Counter()  # journey messages per user

    async def hook(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        (got if body.get("scene") == SCENE else journeyed)[body["user_id"]] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    procs: list[WorkerProcess] = []
    killed = 0
    try:
        async with serve_app(app) as base:
            config = tmp_path / "config.yaml"
            config.write_text(yaml.safe_dump(_delivery_config(base, run)))
            catalog = tmp_path / "catalog.jsonl"
            catalog.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PRODUCTS))
            procs.append(start_worker(tmp_path, "w", bootstrap, run, run,
                                      ["--clock", "event", "--store", "memory"], config))
            procs.append(start_deliver(tmp_path, "d", bootstrap, run, f"{run}-d", config,
                                       catalog, redis_url))
            procs.append(_start_journeys(tmp_path, bootstrap, run, config, redis_url))
            await until("the worker to own all 4 partitions",
                        lambda: procs[0].metric("scenetrigger_partitions") == 4, 150, procs)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                        enable_idempotence=True, request_timeout_ms=60_000)
            await producer.start()
            now = int(time.time() * 1000)
            try:
                for i in range(USERS):
                    if i == USERS // 2:  # half sent; the rest once the node is dead
                        await producer.flush()
                        await until("a quarter of the messages",
                                    lambda: len(got) >= USERS // 4, 150, procs)
                        created = await _topics(bootstrap, run)
                        leaders = Counter(p["leader"] for p in
                                          created[f"{run}.events"]["partitions"])
                        killed = leaders.most_common(1)[0][0]
                        await asyncio.to_thread(cluster.kill_node, killed)
                    event = {"user_id": f"u{i}", "ts": now + i, "type": "page",
                             "page": f"/promo/{i}"}
                    await producer.send(f"{run}.events", orjson.dumps(event),
                                        key=f"u{i}".encode())
                await producer.flush()
            finally:
                await producer.stop()
            await until("every user's two messages",
                        lambda: len(got) == USERS and len(journeyed) == USERS, 180, procs)
    finally:
        for proc in procs:
            if proc.alive():
                await asyncio.to_thread(proc.stop)
        if killed:
            await asyncio.to_thread(cluster.start_missing)
    for name, topic in created.items():
        assert {len(p["replicas"]) for p in topic["partitions"]} == {3}, name
        assert topic["min_insync"] == "2", (name, topic["min_insync"])
    assert {f"{run}.triggers", f"{run}.journey-actions", f"{run}.decisions"} <= set(created)
    print(f"killed node {killed}: {USERS} users, scene messages {sum(got.values())} "
          f"({len(got)} users), journey messages {sum(journeyed.values())} "
          f"({len(journeyed)} users)")


def _delivery_config(base: str, run: str) -> dict[str, Any]:
    return {
        "scenes": {SCENE: {"kind": "arrival", "when": {"page": {"prefix": "/promo"}}}},
        "channels": {"webhook": {"type": "webhook", "url": base + "/hook",
                                 "secret_env": "DELIVER_TEST_SECRET"}},
        "content": {"scenes": {SCENE: {"fallback": {
            "channels": ["webhook"], "subject": "Sale", "text": "On now."}}},
            "journeys": {"follow_1": {"fallback": {
                "channels": ["webhook"], "subject": "Still on", "text": "Look."}}}},
        "strategies": {"journeys": {"follow": {
            "entry": {"scene": SCENE},
            "steps": [{"id": "s1", "send": {"channel": "webhook", "content": "follow_1"}}]}},
            "control": {"share": 0}},
        "delivery": {"default_timezone": "UTC", "quiet_hours": {"enabled": False},
                     "caps": {"per_day": None, "per_week": None},
                     "redis_prefix": f"{run}:"}}


def _start_journeys(tmp: Path, bootstrap: str, run: str, config: Path,
                    redis_url: str) -> WorkerProcess:
    port = free_port()
    return start_cli(tmp / "journeys.log", "journeys",
                     ["journeys", "--config", str(config), "--broker", bootstrap,
                      "--topic-prefix", run, "--redis-url", redis_url, "--redis-prefix",
                      f"{run}j:", "--metrics-port", str(port), "--tick-interval", "0.2"], port)
