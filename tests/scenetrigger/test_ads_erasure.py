"""An erasure (``Eraser.erase``, behind ``scenetrigger erase`` and ``DELETE
/users/{id}``) and an ads unsubscribe (``PUT /users/{id}/consent/ads``)
each remove the user from every synced audience on every platform, with a
receipt: real Redis, the local platform servers."""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from channels.ads.build import build_sync
from channels.ads.state import RedisSyncState
from channels.audience.consent import RedisConsentStore
from channels.audience.directory import RedisDirectory
from channels.feedback.events import ListSink
from config.hash_keys import HashKeys
from config.models import AppConfig
from config.tokens import ADMIN_TOKEN_ENV
from scenetrigger.cli.run.serve import ServeParts, build_app
from scenetrigger.ops.erasure import Eraser
from tests.channels.ads_fixtures import (
    AUDIENCE,
    ENV,
    Platforms,
    ads_config,
    contact_of,
    expected_row,
    four_platforms,
)
from triggers.audiences.record import AudienceChange

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
NAMES = ("meta", "google", "tiktok", "hook")
KEYS = HashKeys(b"e" * 32)
CONTACTS = [contact_of(n) for n in range(6)]


async def _synced(redis: Redis, platforms: Platforms) -> AppConfig:
    base = ads_config(platforms.by_name)
    prefix = f"ads{uuid.uuid4().hex[:8]}:"
    config = base.model_copy(update={"delivery": base.delivery.model_copy(
        update={"redis_prefix": prefix})})
    directory = RedisDirectory(redis, prefix)
    for contact in CONTACTS:
        await directory.put(contact)
    sync = build_sync(config, directory, RedisConsentStore(redis, prefix, KEYS),
                      RedisSyncState(redis, prefix), env=ENV)
    for contact in CONTACTS:
        change = AudienceChange(AUDIENCE, contact.user_id, "enter", 1.0, "condition")
        assert await sync.apply(change) == "added"
    await sync.drain()
    await sync.close()
    for name in NAMES:
        assert platforms.members(name) == {expected_row(name, c) for c in CONTACTS}
    return config


def _gone_everywhere(platforms: Platforms, index: int) -> None:
    for name in NAMES:
        row = expected_row(name, CONTACTS[index])
        assert row not in platforms.members(name), name
        platform = platforms.by_name[name]
        assert row in platform.removed[next(iter(platform.members))], name
        others = {expected_row(name, c) for n, c in enumerate(CONTACTS) if n != index}
        assert platforms.members(name) == others, name


async def test_an_erasure_removes_the_user_on_every_platform(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with four_platforms() as platforms:
        config = await _synced(redis, platforms)
        prefix = config.delivery.redis_prefix
        assert await redis.exists(f"{prefix}ads:{{u2}}")
        receipt = await Eraser(redis, config, keys=KEYS).erase("u2")
        _gone_everywhere(platforms, 2)
    ads = receipt["ad_audiences"]
    assert ads["complete"] is True and ads["reason"] == "erasure"
    assert sorted(r["sink"] for r in ads["removed_from"]) == sorted(NAMES)
    assert not await redis.exists(f"{prefix}ads:{{u2}}")
    text = orjson.dumps(receipt).decode()
    assert CONTACTS[2].email is not None and CONTACTS[2].email.strip() not in text
    assert await redis.exists(f"{prefix}ads-receipt:{KEYS.subject('u2')}")
    await redis.aclose()


async def test_an_ads_unsubscribe_through_the_admin_api_removes_everywhere(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with four_platforms() as platforms:
        config = await _synced(redis, platforms)
        app = build_app(ServeParts(config, redis, ListSink(), env={ADMIN_TOKEN_ENV: "adm"}))
        async with TestClient(TestServer(app)) as client:
            resp = await client.put("/users/u1/consent/ads", json={"granted": False},
                                    headers={"Authorization": "Bearer adm"})
            assert resp.status == 200, await resp.text()
        _gone_everywhere(platforms, 1)
    prefix = config.delivery.redis_prefix
    assert not await redis.exists(f"{prefix}ads:{{u1}}")
    await redis.aclose()


async def test_a_removal_an_erasure_could_not_send_is_sent_by_the_next_sync(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with four_platforms() as platforms:
        config = await _synced(redis, platforms)
        prefix = config.delivery.redis_prefix
        meta = platforms.by_name["meta"]
        meta.storm.rate = 1.0  # Meta throttles everything during the erasure
        receipt = await Eraser(redis, config, keys=KEYS).erase("u3")
        ads = receipt["ad_audiences"]
        assert ads["complete"] is False and ads["pending"] == 1
        assert expected_row("meta", CONTACTS[3]) in platforms.members("meta")
        for name in ("google", "tiktok", "hook"):
            assert expected_row(name, CONTACTS[3]) not in platforms.members(name)
        raw = await redis.lrange(f"{prefix}ads-pending", 0, -1)
        assert len(raw) == 1 and CONTACTS[3].email is not None
        assert CONTACTS[3].email.strip().lower() not in raw[0]  # hashed, never in clear
        assert '"u3"' not in raw[0] and KEYS.subject("u3") in raw[0]  # nor the id
        meta.storm.rate = 0.0  # Meta is back: the next sync sends it
        sync = build_sync(config, RedisDirectory(redis, prefix),
                          RedisConsentStore(redis, prefix, KEYS), RedisSyncState(redis, prefix),
                          env=ENV)
        assert await sync.resume_pending() == 1
        await sync.drain()
        assert await sync.keep_unsent() == 0
        await sync.close()
        _gone_everywhere(platforms, 3)
    assert not await redis.exists(f"{prefix}ads-pending")
    await redis.aclose()
