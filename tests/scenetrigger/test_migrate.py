"""`scenetrigger migrate` on a real Redis holding data in the layout before the
cluster one (keys written here as the old version wrote them): afterwards the
product finds the user's record, tags, claim and pending delivery, TTLs kept."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from channels.audience.directory import RedisDirectory
from channels.policy.decide import DeliveryPolicy, DeliveryRequest
from channels.policy.store import RedisPolicyStore
from config.delivery_models import DeliveryModel, QuietHoursModel
from scenetrigger.cli.main import main
from strategies.store import RedisTagStore
from tests.redis_keys import bucket_tag, pending_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
NOW = 1_780_000_000_000


async def test_migrate_moves_old_keys_into_the_cluster_layout(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = uuid.uuid4().hex[:8]
    p, t = f"mg{run}:", f"mg{run}t:"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scenes: {s: {kind: arrival, when: {page: {prefix: /promo}}}}\n"
                   f'delivery: {{redis_prefix: "{p}"}}\n')
    client = Redis.from_url(redis_url, decode_responses=True)
    user, late = "ann", "bob"
    trigger = f"s|{user}|0:|{NOW}"
    deferred = DeliveryRequest(f"s|{late}|0:|{NOW}", late, "s", None, NOW, ("inbox",))
    try:
        # The old layout: no hash tags, one pending set for everybody.
        await client.set(f"{p}user:{user}", orjson.dumps({"user_id": user, "email":
                                                          "ann@example.com"}))
        await client.set(f"{p}dd:{trigger}", str(NOW), px=600_000)
        await client.hset(f"{p}eng:{user}", mapping={"ignored": "2", "last": str(NOW)})
        await client.set(f"{p}cap:{user}:ch:mail:d:20260528", "3", px=600_000)
        await client.sadd(f"{t}tags:{user}", "vip")
        await client.zadd(f"{p}deferred", {deferred.trigger_id: NOW + 1})
        await client.hset(f"{p}deferred:payload", deferred.trigger_id, deferred.encode())
        await client.hset(f"{p}deferred:tries", deferred.trigger_id, "1")

        args = ["migrate", "--config", str(cfg), "--redis-url", redis_url, "--tags-prefix", t]
        assert await asyncio.to_thread(main, [*args, "--dry-run", "--json"]) == 0
        planned = orjson.loads(capsys.readouterr().out)
        assert await client.exists(f"{p}user:{user}") == 1  # a dry run moves nothing
        assert await asyncio.to_thread(main, [*args, "--json"]) == 0
        summary = orjson.loads(capsys.readouterr().out)
        assert summary["moved"] == planned["moved"] == {
            "directory": 1, "engagement": 1, "caps": 1, "tags": 1, "dedupe": 1, "pending": 1}

        assert await client.exists(f"{p}user:{user}", f"{p}deferred", f"{p}dd:{trigger}") == 0
        assert await client.exists(f"{p}user:{{{user}}}") == 1
        claim = f"{p}dd:{bucket_tag(user)}:{trigger}"
        assert 0 < await client.pttl(claim) <= 600_000  # its TTL kept
        assert await client.get(f"{p}cap:{{{user}}}:ch:mail:d:20260528") == "3"
        assert await client.zscore(pending_key(p, late), deferred.trigger_id) == NOW + 1
        assert await client.hget(f"{pending_key(p, late)}:tries", deferred.trigger_id) == "1"

        # The product reads it where it now looks.
        contact = await RedisDirectory(client, p).get(user)
        assert contact is not None and contact.email == "ann@example.com"
        assert await RedisTagStore(client, t).tags(user) == frozenset({"vip"})
        policy = DeliveryPolicy(DeliveryModel(redis_prefix=p, quiet_hours=QuietHoursModel(enabled=False)),
                                RedisPolicyStore(client))
        again = await policy.decide(DeliveryRequest(trigger, user, "s", None, NOW, ("inbox",)),
                                    NOW + 1_000)
        assert (again.action, again.reason) == ("suppress", "duplicate")
        (released,) = await policy.release_due(NOW + 2)
        assert released.request == deferred and released.attempts == 2

        assert await asyncio.to_thread(main, [*args, "--json"]) == 0  # again: nothing to do
        assert orjson.loads(capsys.readouterr().out)["total_moved"] == 0
    finally:
        keys = [k async for k in client.scan_iter(match=f"mg{run}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
