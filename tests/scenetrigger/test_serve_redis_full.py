"""`serve` with a Redis that refuses writes (issue 19): the request gets 503
with Retry-After and nothing it asked for is stored; the server stays up and
the same request succeeds once Redis takes writes again. Real redis-server
held at maxmemory (noeviction), and a real replica (READONLY)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from channels.audience.directory import RedisDirectory
from channels.feedback.events import ListSink
from config.loader import load_config_text
from config.tokens import ADMIN_TOKEN_ENV
from scenetrigger.cli.run.serve import ServeParts, build_app
from tests.services import start_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
ADMIN = "admin-token-for-tests"
CONFIG = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
delivery: {redis_prefix: "full:"}
"""


async def test_a_full_redis_is_a_503_with_retry_after_and_nothing_stored(
        tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    redis = Redis.from_url(server.url)
    parts = ServeParts(load_config_text(CONFIG), redis, ListSink(), env={ADMIN_TOKEN_ENV: ADMIN})
    auth = {"Authorization": f"Bearer {ADMIN}"}
    body = {"email": "ann@example.com"}
    try:
        async with TestClient(TestServer(build_app(parts))) as client:
            await redis.config_set("maxmemory-policy", "noeviction")
            await redis.config_set("maxmemory", "1")  # every write refused (OOM)
            refused = await client.put("/users/ann", headers=auth, json=body)
            assert refused.status == 503, await refused.text()
            assert refused.headers["Retry-After"] == "5"
            assert (await refused.json())["fault"] == "oom"
            assert await redis.exists(RedisDirectory(redis, "full:").key("ann")) == 0
            assert (await client.get("/healthz")).status == 200  # reads still served
            await redis.config_set("maxmemory", "0")
            stored = await client.put("/users/ann", headers=auth, json=body)
            assert stored.status == 200, await stored.text()
            assert await redis.exists(RedisDirectory(redis, "full:").key("ann")) == 1
            assert parts.registry.get_sample_value(
                "scenetrigger_infra_errors_total", {"component": "serve", "fault": "oom"}) == 1
    finally:
        await redis.aclose()
        server.stop()


async def test_a_read_only_replica_is_a_503_too(tmp_path: Path) -> None:
    primary = start_redis(tmp_path / "primary")
    replica = start_redis(tmp_path / "replica")
    redis = Redis.from_url(replica.url)
    parts = ServeParts(load_config_text(CONFIG), redis, ListSink(), env={ADMIN_TOKEN_ENV: ADMIN})
    try:
        await redis.replicaof("127.0.0.1", primary.port)
        async with TestClient(TestServer(build_app(parts))) as client:
            refused = await client.put("/users/ann", headers={"Authorization": f"Bearer {ADMIN}"},
                                       json={"email": "ann@example.com"})
            assert refused.status == 503, await refused.text()
            assert (await refused.json())["fault"] == "readonly"
            assert (await client.get("/healthz")).status == 200
    finally:
        await redis.aclose()
        replica.stop()
        primary.stop()
