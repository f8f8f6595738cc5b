"""The Redis inbox against a real redis-server, and its HTTP routes on a real
aiohttp server (integration)."""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from channels.transports.inbox import InboxChannel, InboxStore, inbox_routes
from channels.transports.retry import RetryPolicy
from tests.channels.receivers import message, serve_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis_client: aioredis.Redis) -> InboxStore:
    # A fresh prefix per test: the Redis server is shared by the session.
    return InboxStore(redis_client, prefix=f"t:{uuid.uuid4().hex[:8]}:inbox", max_messages=100)


async def test_deliver_list_and_ack(store: InboxStore) -> None:
    channel = InboxChannel("inbox", store)
    for n in (1, 2, 3):
        result = await channel.send(message(n, user_id="u1", channel="inbox"))
        assert (result.ok, result.attempts) == (True, 1)
    items = await store.list("u1")
    assert [i.message["message_id"] for i in items] == ["m-3", "m-2", "m-1"]  # newest first
    assert items[0].message["subject"] == "Still thinking?" and not items[0].read
    assert await store.ack("u1", ["m-2", "m-404"]) == 1  # unknown ids are ignored
    assert await store.ack("u1", ["m-2"]) == 0  # acking twice changes nothing
    assert [i.message["message_id"] for i in await store.list("u1")] == ["m-3", "m-1"]
    everything = await store.list("u1", unread_only=False)
    assert [(i.message["message_id"], i.read) for i in everything] == \
        [("m-3", False), ("m-2", True), ("m-1", False)]
    assert await store.list("somebody-else") == []


async def test_a_message_id_is_stored_once(store: InboxStore) -> None:
    channel = InboxChannel("inbox", store)
    first = await channel.send(message(1, user_id="u1"))
    again = await channel.send(message(1, user_id="u1", text="a replayed trigger"))
    assert first.ok and again.ok  # a duplicate is already delivered, not an error
    assert await store.add(message(1, user_id="u1")) is False
    items = await store.list("u1", unread_only=False)
    assert [i.message["text"] for i in items] == ["Your cart misses you"]


async def test_the_stream_is_capped_and_expires(redis_client: aioredis.Redis) -> None:
    store = InboxStore(redis_client, prefix=f"t:{uuid.uuid4().hex[:8]}", max_messages=100,
                       retention_ms=60_000)
    for n in range(450):
        await store.add(message(n, user_id="u9"))
    length = await redis_client.xlen(store.stream_key("u9"))
    assert 100 <= length < 300  # MAXLEN ~ trims whole nodes, never below the cap
    assert 0 < await redis_client.pttl(store.stream_key("u9")) <= 60_000
    items = await store.list("u9", limit=1000)
    assert len(items) == 100 and items[0].message["message_id"] == "m-449"
    assert await store.ack("u9", [f"m-{n}" for n in range(350, 450)]) == 100
    assert await store.ack("u9", [f"m-{n}" for n in range(100)]) == 0  # trimmed: gone
    # Acks of entries trimmed since do not pile up: the set is pruned.
    acked = 100
    for round_ in range(1, 6):
        ids = [f"r{round_}-{n}" for n in range(150)]
        for message_id in ids:
            await store.add(message(0, message_id=message_id, user_id="u9"))
        acked += await store.ack("u9", ids)
    length = await redis_client.xlen(store.stream_key("u9"))
    size = await redis_client.scard(store.stream_key("u9") + ":acked")
    assert acked > 600 and size <= 2 * length + 16 + 150


async def test_redis_down_is_a_retryable_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # No client-side retries: the channel's own attempts are under test.
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    channel = InboxChannel("inbox", InboxStore(client), RetryPolicy(max_attempts=2),
                           owns_redis=True, sleep=sleep, rng=random.Random(3))
    result = await channel.send(message())
    await channel.close()
    assert (result.ok, result.attempts, result.retryable) == (False, 2, True)
    assert "redis unavailable" in (result.error or "")
    assert len(waits) == 1


async def test_read_and_ack_over_http(store: InboxStore) -> None:
    for n in (1, 2):
        await store.add(message(n, user_id="u7"))
    async def anyone(_request: web.Request, _user_id: str) -> bool:
        return True

    app = web.Application()
    app.add_routes(inbox_routes(store, anyone))
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/inbox/u7") as resp:
            assert resp.status == 200
            listed = await resp.json()
        assert [m["message_id"] for m in listed["messages"]] == ["m-2", "m-1"]
        assert listed["messages"][0]["html"] == "<p>Your cart misses you</p>"
        async with http.post(f"{base}/inbox/u7/ack", json={"ids": ["m-1"]}) as resp:
            assert resp.status == 200 and await resp.json() == {"acked": 1}
        async with http.get(f"{base}/inbox/u7") as resp:
            assert [m["message_id"] for m in (await resp.json())["messages"]] == ["m-2"]
        async with http.get(f"{base}/inbox/u7?all=1&limit=1") as resp:
            assert [(m["message_id"], m["read"]) for m in (await resp.json())["messages"]] == \
                [("m-2", False)]
        for bad in (b"not json", b'{"ids": "m-1"}', b'{"ids": [1]}', b"[]"):
            async with http.post(f"{base}/inbox/u7/ack", data=bad) as resp:
                assert resp.status == 400
        async with http.get(f"{base}/inbox/u7?limit=x") as resp:
            assert resp.status == 400


async def test_routes_can_require_authorization(store: InboxStore) -> None:
    await store.add(message(1, user_id="u1"))

    async def only_own(request: web.Request, user_id: str) -> bool:
        return request.headers.get("X-User") == user_id

    app = web.Application()
    app.add_routes(inbox_routes(store, only_own))
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/inbox/u1", headers={"X-User": "u2"}) as resp:
            assert resp.status == 403
        async with http.post(f"{base}/inbox/u1/ack", json={"ids": ["m-1"]}) as resp:
            assert resp.status == 403
        async with http.get(f"{base}/inbox/u1", headers={"X-User": "u1"}) as resp:
            assert resp.status == 200 and len((await resp.json())["messages"]) == 1


async def test_works_with_a_decode_responses_client(redis_url: str) -> None:
    # The embedded runtime shares one client created with decode_responses=True.
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = InboxStore(client, prefix=f"t:{uuid.uuid4().hex[:8]}:inbox")
    try:
        assert (await InboxChannel("inbox", store).send(message(1, user_id="u1"))).ok
        [item] = await store.list("u1")
        assert item.message["message_id"] == "m-1" and isinstance(item.entry_id, str)
        assert await store.ack("u1", ["m-1"]) == 1
    finally:
        await client.aclose()


async def test_batched_sends_share_a_pipeline_and_keep_dedupe(store: InboxStore) -> None:
    channel = InboxChannel("inbox", store, batch_max=4, batch_linger_ms=1_000)
    sends = [message(n, user_id=f"u{n % 2}") for n in range(4)]
    sends.append(message(0, user_id="u0"))  # a duplicate in the next batch
    results = await asyncio.gather(*(channel.send(m) for m in sends[:4]))
    assert [(r.ok, r.message_id) for r in results] == [(True, f"m-{n}") for n in range(4)]
    assert (await channel.send(sends[4])).ok  # leaves after the linger time
    await channel.close()
    assert [i.message["message_id"] for i in await store.list("u0")] == ["m-2", "m-0"]
    assert [i.message["message_id"] for i in await store.list("u1")] == ["m-3", "m-1"]
    assert await store.add_many([message(1, user_id="u1"), message(5, user_id="u1")]) == \
        [False, True]
