"""An erasure removes the user's ad sync state (``{p}ads:{{id}}``, which
names the user and their audiences) even when no ad sink is configured any
more (nothing to call ``forget`` on): real Redis."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from channels.ads.state import RedisSyncState
from config.hash_keys import HashKeys
from config.loader import load_config_text
from scenetrigger.ops.erasure import Eraser

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_an_erasure_without_ad_sinks_still_removes_the_ad_sync_state(
        redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    prefix = f"adsr{uuid.uuid4().hex[:8]}:"
    config = load_config_text("scenes: {promo_arrival: {kind: arrival, when: {type: page}}}\n"
                              f"delivery: {{redis_prefix: '{prefix}'}}\n")
    assert not config.ads.sinks
    state = RedisSyncState(redis, prefix)
    await state.mark("u9", "meta", "cart_abandoners", 1_000)  # synced while ads were configured
    await state.mark("u10", "meta", "cart_abandoners", 1_000)
    eraser = Eraser(redis, config, keys=HashKeys(b"e" * 32))
    assert eraser.forget_in_ads is None
    found = await eraser.find("u9")
    assert state.key("u9") in found.all_keys()
    await eraser.erase("u9")
    assert not await redis.exists(state.key("u9"))
    assert await redis.exists(state.key("u10"))  # another user's stays
    await redis.aclose()
