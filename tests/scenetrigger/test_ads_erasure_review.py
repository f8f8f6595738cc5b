"""An erasure removes the user's ad sync state (``{p}ads:{{id}}``, which
names the user and their audiences) even when no ad sink is configured any
more (nothing to call ``forget`` on): real Redis."""

from __future__ import annotations

import uuid

import orjson
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


async def test_unsubscribe_from_all_on_the_preference_page_leaves_the_ad_audiences(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ad sinks configured the preference page has the ``ads`` row
    (docs/ads.md: the preference page changes ads consent like any other),
    and "unsubscribe from all" withdraws it: the user leaves every platform."""
    import hashlib
    import hmac

    from aiohttp.test_utils import TestClient, TestServer

    from channels.feedback.events import ListSink
    from scenetrigger.cli.run.serve import ServeParts, build_app
    from tests.channels.ads_fixtures import ENV, four_platforms
    from tests.scenetrigger.test_ads_erasure import _gone_everywhere, _synced

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    secret = "tracking-secret-for-the-review"
    sig = hmac.new(secret.encode(), b"unsubscribe\nu4\nemail", hashlib.sha256).hexdigest()[:32]
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with four_platforms() as platforms:
        config = await _synced(redis, platforms)
        env = {config.delivery.tracking.secret_env: secret}
        app = build_app(ServeParts(config, redis, ListSink(), env=env))
        async with TestClient(TestServer(app)) as client:
            page = await (await client.get(f"/unsubscribe/email?u=u4&s={sig}")).text()
            assert 'data-channel="ads"' in page
            resp = await client.post(f"/unsubscribe/email?u=u4&s={sig}", data={"action": "all"})
            assert resp.status == 200, await resp.text()
        _gone_everywhere(platforms, 4)
    prefix = config.delivery.redis_prefix
    held = await redis.hget(f"{prefix}consent:{{u4}}", "ads:marketing")
    assert held is not None and orjson.loads(held)[0] is False
    await redis.aclose()
