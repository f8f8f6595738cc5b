"""The embedded runtime (``demo --deliver live``) writes the live profile
store itself, after each tick, on a real redis-server: each user's stored
profile is the one replay computes from the same events up to then, an
identified anonymous id's key goes, and a user no event of the tick touched
is not written again (integration)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from channels.audience.live_profile import LiveProfileStore
from channels.redis_client import redis_client
from config.loader import validate_config
from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.runtime.live_profiles import ProfileWriter
from scenetrigger.runtime.replay import new_host, replay
from triggers.host import IDENTIFY

pytestmark = pytest.mark.integration
START = 1_700_000_000_000
SEC = 1_000
CONFIG = {"scenes": {"rv": {"kind": "repeat", "when": {"type": "view"}, "per": "product_id",
                            "count": 2, "within": "10m"}}}
EVENTS: list[dict[str, Any]] = [
    {"user_id": "ann", "ts": START + 1 * SEC, "type": "view", "product_id": "p1",
     "category": "shoes", "source": "category"},
    {"user_id": "bob", "ts": START + 2 * SEC, "type": "search", "query": "red boots"},
    {"user_id": "anon-7", "ts": START + 3 * SEC, "type": "view", "product_id": "p9",
     "page": "/promo/spring"},
    {"user_id": "ann", "ts": START + 4 * SEC, "type": "purchase", "product_id": "p1",
     "price": "59.90", "category": "shoes"},
    # second tick
    {"user_id": "anon-7", "ts": START + 11 * SEC, "type": IDENTIFY, "known_id": "bob"},
    {"user_id": "bob", "ts": START + 12 * SEC, "type": "view", "product_id": "p2",
     "tz": "Europe/Berlin"},
]


def replayed(until_ms: int) -> dict[str, bytes]:
    """Each user's profile wire (orjson) after the events up to ``until_ms``, by replay."""
    host = new_host(validate_config(CONFIG), profiles=True)
    records = [(n, host.decode_mapping(e)) for n, e in enumerate(EVENTS, 1)
               if e["ts"] <= until_ms]
    replay(records, host, lambda _trig: None)
    return {user: orjson.dumps(state.profile.to_wire())
            for user, state in host.engine.store.items()}


def test_each_tick_writes_the_profiles_its_events_changed(redis_url: str) -> None:
    async def main() -> None:
        client = redis_client(redis_url)
        store = LiveProfileStore(client, f"t{uuid.uuid4().hex[:6]}:", ttl_s=600)
        runtime = EmbeddedRuntime(new_host(validate_config(CONFIG), profiles=True), EVENTS,
                                  start_ms=START)
        clock = [1_000]
        writer = ProfileWriter(store, lambda: clock[0])
        writer.attach(runtime)
        try:
            await runtime.step(START + 5 * SEC)
            first = replayed(START + 5 * SEC)
            assert set(first) == {"ann", "bob", "anon-7"}
            for user, wire in first.items():
                got = await store.get(user)
                assert got is not None and got.updated_ms == 1_000
                assert orjson.dumps(got.profile.to_wire()) == wire
            ann = await store.get("ann")
            assert ann is not None and ann.profile.purchases == 1

            clock[0] = 2_000
            await runtime.step(START + 13 * SEC)
            second = replayed(START + 13 * SEC)
            assert set(second) == {"ann", "bob"}  # anon-7's state is bob's now
            bob = await store.get("bob")
            assert bob is not None and bob.updated_ms == 2_000
            assert orjson.dumps(bob.profile.to_wire()) == second["bob"]
            assert bob.profile.promo_views == 1 and bob.profile.tz == "Europe/Berlin"
            assert await store.get("anon-7") is None
            ann = await store.get("ann")  # no event of ann in this tick: not written again
            assert ann is not None and ann.updated_ms == 1_000
            assert (writer.written, writer.deleted) == (4, 1)
        finally:
            await client.aclose()

    asyncio.run(main())
