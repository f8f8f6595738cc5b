"""Tag/score stores (memory, and real Redis) and the token-protected routes
served by a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from config.strategy_models import ScoringModel
from config.tokens import AdminTokens
from strategies.http import build_app
from strategies.scoring import LeadScore
from strategies.store import MemoryTagStore, RedisTagStore, TagStore

DAY = 86_400_000
T0 = 1_569_888_000_000
SCORING = ScoringModel(half_life=DAY, threshold=50.0)


async def _exercise(store: TagStore) -> None:
    await store.add("u", ["churned", "tod:night", "weekday"])
    await store.set_derived("u", ["tod:evening", "weekday", "segment:loyal"])
    assert await store.tags("u") == {"churned", "tod:evening", "weekday", "segment:loyal"}
    await store.remove("u", ["churned"])
    assert await store.tags("u") == {"tod:evening", "weekday", "segment:loyal"}
    assert await store.tags("nobody") == frozenset()
    assert await store.score("u") is None
    await store.put_score("u", LeadScore(80.0, T0, False))
    assert await store.score("u") == LeadScore(80.0, T0, False)


async def test_memory_store() -> None:
    await _exercise(MemoryTagStore())


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisTagStore]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield RedisTagStore(client, prefix="t6:")
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_redis_store(redis_store: RedisTagStore) -> None:
    await _exercise(redis_store)


async def _client(store: TagStore, token: str) -> TestClient:  # type: ignore[type-arg]
    client: TestClient = TestClient(  # type: ignore[type-arg]
        TestServer(build_app(store, SCORING, AdminTokens.single(token), clock=lambda: T0 + DAY),
                   host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.mark.integration
async def test_routes_read_tags_and_decayed_score_from_redis(redis_store: RedisTagStore) -> None:
    await redis_store.add("42", ["prefers_wechat", "churned"])
    await redis_store.put_score("42", LeadScore(80.0, T0, False))
    client = await _client(redis_store, "s3cret")
    try:
        auth = {"Authorization": "Bearer s3cret"}
        resp = await client.get("/users/42/tags", headers=auth)
        assert resp.status == 200
        assert await resp.json() == {"user_id": "42", "tags": ["churned", "prefers_wechat"]}
        resp = await client.get("/users/42/score", headers=auth)
        body = await resp.json()
        assert body["score"] == pytest.approx(40.0)  # one half-life after it was stored
        assert body["handoff_armed"] is False and body["threshold"] == 50.0
        resp = await client.get("/users/42/score?now_ms=" + str(T0 + 2 * DAY), headers=auth)
        assert (await resp.json())["score"] == pytest.approx(20.0)
        resp = await client.get("/users/7/score", headers=auth)
        assert (await resp.json())["score"] == 0.0
    finally:
        await client.close()


@pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret", "Basic s3cret"])
async def test_routes_need_the_token(header: str | None) -> None:
    client = await _client(MemoryTagStore(), "s3cret")
    try:
        headers = {} if header is None else {"Authorization": header}
        for path in ("/users/1/tags", "/users/1/score"):
            assert (await client.get(path, headers=headers)).status == 401
    finally:
        await client.close()


async def test_routes_are_off_without_a_configured_token() -> None:
    client = await _client(MemoryTagStore(), "")
    try:
        resp = await client.get("/users/1/tags", headers={"Authorization": "Bearer "})
        assert resp.status == 403
    finally:
        await client.close()


async def test_a_non_utf8_token_is_a_wrong_token_not_a_server_error() -> None:
    client = await _client(MemoryTagStore(), "s3cret")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"GET /users/1/tags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).split()[1] == b"401"
        writer.close()
    finally:
        await client.close()
