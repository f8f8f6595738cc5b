"""Review findings on on-site slots: an impression id must stay readable for
every variant name a config accepts, and erasure must find the "counted
once" markers a slot impression leaves in Redis (their id names the user)."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from channels.feedback.events import RedisMessageIndex, once_key
from channels.feedback.slot_ids import SlotAwareIndex, impression_id, impression_meta
from config.loader import load_config_text
from config.slot_models import SlotModel
from scenetrigger.ops.erasure import Eraser


def test_a_default_named_with_a_colon_still_makes_a_readable_impression() -> None:
    # FallbackModel.name has no pattern: the config accepts this default.
    model = SlotModel.model_validate({"default": {"name": "spring:sale"}})
    variant = model.default_content().name
    meta = impression_meta(impression_id("home", variant, 1_700_000_000_000, "u1"))
    assert meta is not None, "the beacon and clicks of this default would count nothing"
    assert (meta.user_id, meta.slot, meta.variant) == ("u1", "home", "spring:sale")


@pytest.mark.integration
async def test_erase_finds_the_once_markers_of_a_slot_impression(redis_url: str) -> None:
    prefix = f"sr{uuid.uuid4().hex[:8]}:"
    config = load_config_text("scenes: {promo_arrival: {kind: arrival, when: {type: page}}}\n"
                              f'delivery: {{redis_prefix: "{prefix}"}}\n')
    client = Redis.from_url(redis_url, decode_responses=True)
    user = "alice@example.com"
    mid = impression_id("home", "generic", 1_700_000_000_000, user)
    index = SlotAwareIndex(RedisMessageIndex(client, prefix))
    try:
        # What the pixel and a click redirect leave (channels.feedback.events.FeedbackApp).
        assert await index.first("delivered", mid)
        assert await index.first("clicked", mid, "abc")
        markers = [once_key(prefix, "delivered", mid), once_key(prefix, "clicked", mid)]
        assert all([await client.exists(k) for k in markers])
        found = await Eraser(client, config).find(user)
        assert sorted(k for k in found.all_keys() if k in markers) == sorted(markers)
    finally:
        await client.delete(*[k async for k in client.scan_iter(match=f"{prefix}*")])
        await client.aclose()


async def test_a_full_product_cache_still_answers_what_it_held(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from channels.content import catalog as catalog_module
    from channels.content.catalog import CachedCatalog, MemoryCatalog, Product

    monkeypatch.setattr(catalog_module, "_CACHED_PRODUCTS", 1)
    products = [Product(f"p{i}", f"product {i}") for i in range(3)]
    cached = CachedCatalog(MemoryCatalog(products), ttl_s=60, clock=lambda: 0.0)
    assert set(await cached.get_many(["p0", "p1"])) == {"p0", "p1"}  # both cached, fresh
    # p0 is fresh (no read), p2 is not: the cache is past its bound and starts again.
    found = await cached.get_many(["p0", "p2"])
    assert {pid: p.name for pid, p in found.items()} == {"p0": "product 0", "p2": "product 2"}


# A slot impression nobody signed cannot reach the report: the collector
# refuses the system's own event types from a browser
# (tests/agents/test_identity_gate.py::test_a_browser_cannot_record_deliveries_slot_impressions_or_opens).
