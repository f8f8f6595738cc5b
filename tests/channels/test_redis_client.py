"""The one Redis client factory: which client a URL gets (no server needed
for these: clients connect lazily; the probe of a closed port fails fast)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from channels.errors import ChannelError
from channels.redis_client import (
    get_many,
    is_cluster,
    lease_bucket,
    redis_client,
    redis_url_or_env,
)
from tests.redis_keys import bucket_tag
from tests.services import free_port


async def test_a_cluster_scheme_forces_the_cluster_client_and_database_0() -> None:
    client = redis_client("redis-cluster://127.0.0.1:7000/0")
    assert isinstance(client, RedisCluster) and is_cluster(client)
    await client.aclose()
    with pytest.raises(ChannelError, match="database 0 only"):
        redis_client("redis-cluster://127.0.0.1:7000/3")
    assert redis_url_or_env("rediss-cluster://h:7000") == "rediss-cluster://h:7000"


async def test_a_node_that_does_not_answer_is_taken_for_one_redis() -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(client, Redis) and not is_cluster(client)
    await client.aclose()


@pytest.mark.integration
async def test_one_redis_is_asked_and_gets_the_plain_client(redis_url: str) -> None:
    client = redis_client(redis_url, decode_responses=True)
    try:
        assert not is_cluster(client)
        await client.set("rc-probe:a", "1")
        assert await get_many(client, ["rc-probe:a", "rc-probe:none"]) == ["1", None]
    finally:
        await client.delete("rc-probe:a")
        await client.aclose()


def test_a_users_bucket_is_the_documented_crc32_modulo_16() -> None:
    for user in ("u1", "ann", "用户-7", ""):
        assert f"{{d{lease_bucket(user):02d}}}" == bucket_tag(user)
    assert len({lease_bucket(f"u{i}") for i in range(1000)}) == 16  # every bucket used


def test_a_mistyped_url_is_one_clear_line() -> None:
    with pytest.raises(ChannelError, match="is not a Redis URL"):
        redis_url_or_env("localhost:6379")
