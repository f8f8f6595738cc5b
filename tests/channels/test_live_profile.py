"""The live profile store against a real redis-server and a real Redis Cluster:
the bytes under the documented key, newer-wins, erasure (integration)."""

from __future__ import annotations

import uuid

import orjson
import pytest

from channels.audience.live_profile import LiveProfileStore, decode_live_profile
from channels.redis_client import redis_client
from tests.services import RedisCluster
from triggers.events import Event
from triggers.profile import Profile
from triggers.wire import MalformedRecord

pytestmark = pytest.mark.integration


def _profile(views: int) -> Profile:
    profile = Profile()
    for i in range(views):
        profile.update(Event("u", 1_000 + i, "view",
                             {"type": "view", "product_id": f"p{i}", "category": "shoes"}))
    return profile


@pytest.mark.parametrize("where", ["node", "cluster"])
async def test_put_get_newer_wins_and_erasure(where: str, redis_url: str,
                                              redis_cluster: RedisCluster) -> None:
    url = redis_url if where == "node" else redis_cluster.url
    client = redis_client(url)
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    store = LiveProfileStore(client, prefix, ttl_s=60)
    try:
        two, five = _profile(2), _profile(5)
        assert two.to_wire() != five.to_wire()
        assert await store.put("ann", five, 2_000)
        assert not await store.put("ann", two, 1_999)  # an older record comes again
        raw = await client.get(f"{prefix}profile:{{ann}}")
        assert orjson.loads(raw) == [2_000, orjson.loads(orjson.dumps(five.to_wire()))]
        assert 0 < await client.ttl(f"{prefix}profile:{{ann}}") <= 60
        got = await store.get("ann")
        assert got is not None and got.updated_ms == 2_000
        assert got.profile.to_wire() == five.to_wire()
        assert await store.put("ann", two, 2_001)
        got = await store.get("ann")
        assert got is not None and got.profile.to_wire() == two.to_wire()
        assert await store.put_many([("bob", two, 5), ("cy", five, 6)]) == 2
        await store.delete("ann")
        assert await store.get("ann") is None and await store.get("nobody") is None
    finally:
        await client.aclose()


def test_a_bad_value_is_a_malformed_record() -> None:
    for value in (b"{", b"[1]", b'["1", []]', b"[1, [1, 2]]"):
        with pytest.raises(MalformedRecord):
            decode_live_profile("u", value)
