"""The service fixtures give working Redis and Kafka (real servers, no mocks)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

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
