"""kill -9 of a Redis Cluster master while `scenetrigger deliver` runs
(issue 18): the master holding most of the run's keys dies mid-stream, its
replica is promoted, `deliver` goes on (or, when it gave up, a new one takes
its Kafka offsets). Real Kafka, a real 3-master + 3-replica cluster named by
one node's ``redis://`` URL, a real webhook receiver.

Counted (printed): sent, received, dead-lettered, duplicated, lost. What
must hold: nothing lost (every trigger received or dead-lettered) and
nothing left pending. Duplicates are allowed (at-least-once: a write the
dead master acknowledged but had not yet copied to its replica is gone,
e.g. a lease's end) and counted by the Idempotency-Key the receiver saw.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from agents.producer import ensure_topics
from channels.pipeline import message_id_for
from channels.redis_client import redis_client
from channels.transports.deadletter import DeadLetterStore
from tests.agents.worker_support import unique
from tests.channels.receivers import serve_app
from tests.channels.test_deliver_kafka import PRODUCTS, produce, start_deliver
from tests.faults.test_deliver_kill import SCENE, FlakySink, _config
from tests.redis_keys import all_pending_keys
from tests.services import start_redis_cluster
from triggers.events import Trigger
from triggers.wire import encode_trigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(280)]
TRIGGERS = 300


async def keys_per_master(ports: list[int], prefix: str) -> dict[int, int]:
    from redis.asyncio import Redis

    out = {}
    for port in ports:
        node = Redis(host="127.0.0.1", port=port)
        try:
            out[port] = len([k async for k in node.scan_iter(match=f"{prefix}*", count=1000)])
        finally:
            await node.aclose()
    return out


async def test_kill_9_of_a_cluster_master_while_deliver_runs_loses_nothing(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    run = unique("rcf")
    cluster = await asyncio.to_thread(start_redis_cluster, tmp_path / "cluster")
    sink = FlakySink(refuse=0.0)
    app = web.Application()
    app.router.add_post("/hook", sink.handle)
    procs: list[Any] = []
    client = redis_client(cluster.url, decode_responses=True)
    restarts = 0
    errors: list[str] = []
    pending = -1
    try:
        async with serve_app(app) as base:
            config = tmp_path / "deliver.yaml"
            config.write_text(yaml.safe_dump(_config(base + "/hook", run)))
            catalog = tmp_path / "catalog.jsonl"
            catalog.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PRODUCTS))
            await ensure_topics(kafka_bootstrap, [f"{run}.triggers", f"{run}.journey-actions"],
                                4)
            now = int(time.time() * 1000)
            triggers = [Trigger(SCENE, f"u{i}", None, now + i) for i in range(TRIGGERS)]

            def deliver(n: int) -> Any:
                url = cluster.url if n == 0 else f"redis://127.0.0.1:{cluster.masters()[0]}/0"
                proc = start_deliver(tmp_path, f"d{n}", kafka_bootstrap, run, f"{run}-g",
                                     config, catalog, url)
                procs.append(proc)
                return proc

            current = deliver(0)
            await produce(kafka_bootstrap, f"{run}.triggers",
                          [(t.user_id, encode_trigger(t, now)) for t in triggers])
            deadline = time.monotonic() + 90
            while len(sink.accepted) < TRIGGERS // 3 and time.monotonic() < deadline:
                assert current.alive(), current.log_tail()
                await asyncio.sleep(0.02)
            spread = await keys_per_master(cluster.masters(), f"{run}:")
            victim = max(spread, key=lambda port: spread[port])
            await asyncio.to_thread(cluster.nodes[victim].kill)  # kill -9, mid-stream
            killed_at = len(sink.accepted)
            await asyncio.to_thread(cluster.wait_ok, 60, 3, 2)  # its replica promoted
            # The observer starts again from a node that survived: a client whose
            # startup node is the killed one can keep asking it for the slot map.
            survivor = f"redis://127.0.0.1:{cluster.masters()[0]}/0"
            await client.aclose()
            client = redis_client(survivor, decode_responses=True)
            store = DeadLetterStore(client, "scenetrigger:deadletter")
            expected = {t.trigger_id for t in triggers}
            by_message = {message_id_for(t.trigger_id, "webhook"): t.trigger_id
                          for t in triggers}

            async def buried_now() -> set[str]:
                letters = [x async for x in store.entries()]
                buried = {x.message.trigger_id for x in letters if x.message is not None}
                return buried | {x.source.removeprefix("request/") for x in letters
                                 if x.kind == "record" and x.source.startswith("request/")}

            deadline = time.monotonic() + 150
            received: set[str] = set()
            buried: set[str] = set()
            while time.monotonic() < deadline:
                if not current.alive():  # it gave up on Redis: another takes its offsets
                    restarts += 1
                    current = deliver(restarts)
                received = {by_message[mid] for mid in sink.accepted}
                try:
                    buried = await buried_now()
                    pending = sum([await client.zcard(k) for k in all_pending_keys(f"{run}:")])
                except Exception as exc:  # the cluster is still moving the slots: ask again
                    errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)
                    continue
                if received | buried >= expected and pending == 0:
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"not settled: {len(received)} received, {len(buried)} "
                                     f"dead-lettered, pending {pending}; test client errors "
                                     f"{errors[-3:]}\n{current.log_tail(40)}")
            await asyncio.to_thread(current.stop)
    finally:
        for proc in procs:
            if proc.alive():
                await asyncio.to_thread(proc.kill)
        await client.aclose()
        await asyncio.to_thread(cluster.stop)
    lost = expected - received - buried
    duplicated = len(sink.accepted) - len(set(sink.accepted)) + len(received & buried)
    print(f"redis cluster master {victim} kill -9 at {killed_at} received (keys per master "
          f"{sorted(spread.values())}): sent {TRIGGERS}, received {len(received)}, "
          f"dead-lettered {len(buried - received)}, duplicated {duplicated}, lost {len(lost)}, "
          f"deliver restarts {restarts}")
    assert lost == set(), sorted(lost)[:10]
    assert len(received | buried) == TRIGGERS
