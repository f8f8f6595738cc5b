"""The strategies' integration tests' Redis client: one empty database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    try:
        yield redis
    finally:
        await redis.aclose()
