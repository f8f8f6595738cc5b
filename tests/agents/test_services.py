"""The service fixtures give working Redis and Kafka (real servers, no mocks)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from channels.redis_client import get_many
from tests.services import REPO

pytestmark = pytest.mark.integration


async def test_redis_fixture_answers(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.set("scenetrigger:probe", b"1", nx=True, ex=10)
        assert await client.get("scenetrigger:probe") == b"1"
    finally:
        await client.delete("scenetrigger:probe")
        await client.aclose()


async def test_kafka_fixture_has_one_broker(kafka_bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        assert [b["node_id"] for b in cluster["brokers"]] == [1]
    finally:
        await admin.close()


async def test_redis_script_starts_and_stops_a_cluster(tmp_path: Path) -> None:
    """`scripts/redis.sh start --cluster`: 3 masters and 3 replicas behind
    one node's plain URL (the factory finds the cluster); stop ends all six."""
    from channels.redis_client import is_cluster, redis_client

    env = {**os.environ, "SCENETRIGGER_REDIS_RUN_DIR": str(tmp_path)}
    script = str(REPO / "scripts" / "redis.sh")

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    def pids() -> list[int]:
        return [int(p.read_text()) for p in tmp_path.glob("cluster/node-*/redis.pid")]

    started = await asyncio.to_thread(call, "start", "--cluster")
    nodes = await asyncio.to_thread(pids)
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip().splitlines()[-1]
        client = redis_client(url)
        try:
            assert is_cluster(client)
            keys = [f"probe:{i}" for i in range(50)]  # over many slots
            for key in keys:
                await client.set(key, key)
            assert await get_many(client, keys) == [k.encode() for k in keys]
            flags = [node["flags"] for node in (await client.cluster_nodes()).values()]
            assert sorted(f.replace("myself,", "") for f in flags) == (
                ["master"] * 3 + ["slave"] * 3)
        finally:
            await client.aclose()
    finally:
        stopped = await asyncio.to_thread(call, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert len(nodes) == 6
    for pid in nodes:  # every node ended
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
