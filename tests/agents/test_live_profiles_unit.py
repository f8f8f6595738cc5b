"""The worker's live profile records without Kafka (agents/live_profiles.py):
one record per changed user per settle, holding the profile the engine's
state has, a tombstone for an erased user, nothing for an untouched one, and
a refused send counted."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from agents.engine_host import ERASE, PartitionHost
from agents.live_profiles import LiveProfiles
from agents.partition_store import PartitionStore
from channels.audience.live_profile import decode_live_profile
from config.loader import load_config_text
from triggers.events import Event

CONFIG = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 2, within: 10m}
"""
NOW = 1_780_000_000_000


def ev(user: str, ts: int, etype: str, **fields: Any) -> Event:
    return Event(user, ts, etype, {"user_id": user, "ts": ts, "type": etype, **fields})


def make_host(table: dict[bytes, bytes]) -> PartitionHost:
    cfg = load_config_text(CONFIG)
    store = PartitionStore(table, lambda: list(table.items()))
    host = PartitionHost.build(0, store, cfg.scene_list(), cfg.engine.limits(),
                               cfg.engine.input_rules(), "event")
    host.rebuild()
    return host


class FakeProducer:
    """Faust's producer.send: hands back a future Kafka completes (or refuses)."""

    def __init__(self, refuse: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.refuse = refuse

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: Any,
                   timestamp: Any, headers: Any) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuse:
            future.set_exception(RuntimeError("not leader"))
        else:
            future.set_result(None)
        return future


def feed(producer: FakeProducer, clock: list[int]) -> tuple[LiveProfiles, CollectorRegistry]:
    registry = CollectorRegistry()
    return LiveProfiles("p.profiles", lambda: producer, lambda: clock[0], registry), registry


async def test_one_record_per_changed_user_per_settle_with_the_states_profile() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    producer = FakeProducer()
    clock = [NOW]
    profiles, registry = feed(producer, clock)
    for offset, (user, product) in enumerate([("ann", "a"), ("bob", "b"), ("ann", "c"),
                                              ("ann", "a")]):
        host.on_event(ev(user, 1_000 + offset, "view", product_id=product,
                         category="shoes"), offset, 0)
    profiles.on_settle(host)
    host.store.flush()
    await profiles.flush()
    assert [(t, k) for t, k, _ in producer.sent] == [("p.profiles", b"ann"),
                                                     ("p.profiles", b"bob")]
    for _, key, value in producer.sent:
        assert value is not None
        got = decode_live_profile(key.decode(), value)
        state = host.store.get(key.decode())
        assert state is not None
        assert got.updated_ms == NOW
        assert orjson.dumps(got.profile.to_wire()) == orjson.dumps(state.profile.to_wire())
    assert decode_live_profile("ann", producer.sent[0][2] or b"").profile.views == 3

    # The next settle: only bob changed.
    producer.sent.clear()
    clock[0] = NOW + 5
    host.on_event(ev("bob", 2_000, "search", query="boots"), 10, 0)
    profiles.on_settle(host)
    host.store.flush()
    await profiles.flush()
    assert [k for _, k, _ in producer.sent] == [b"bob"]
    bob = decode_live_profile("bob", producer.sent[0][2] or b"")
    assert (bob.updated_ms, bob.profile.searches, bob.profile.last_query) == (NOW + 5, 1, "boots")

    # Nothing changed: nothing sent.
    producer.sent.clear()
    profiles.on_settle(host)
    await profiles.flush()
    assert producer.sent == []
    assert registry.get_sample_value("scenetrigger_worker_profiles_total", {"op": "put"}) == 3


async def test_an_erased_user_gets_a_tombstone_and_no_profile() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    producer = FakeProducer()
    profiles, registry = feed(producer, [NOW])
    host.on_event(ev("ann", 1_000, "view", product_id="a"), 0, 0)
    host.on_event(ev("bob", 1_001, "view", product_id="b"), 1, 0)
    profiles.on_settle(host)
    host.store.flush()
    await profiles.flush()
    host.on_event(ev("bob", 1_002, "view", product_id="c"), 2, 0)
    host.on_event(Event("ann", 1_003, ERASE, {"user_id": "ann", "ts": 1_003, "type": ERASE}),
                  3, 0)
    host.on_event(Event("nobody", 1_004, ERASE,
                        {"user_id": "nobody", "ts": 1_004, "type": ERASE}), 4, 0)
    producer.sent.clear()
    profiles.on_settle(host)
    host.store.flush()
    await profiles.flush()
    assert [(k, v is None) for _, k, v in producer.sent] == [(b"bob", False), (b"ann", True)]
    assert b"ann" not in table
    assert registry.get_sample_value("scenetrigger_worker_profiles_total",
                                     {"op": "tombstone"}) == 1


async def test_a_refused_send_is_counted() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    producer = FakeProducer(refuse=True)
    profiles, registry = feed(producer, [NOW])
    host.on_event(ev("ann", 1_000, "view", product_id="a"), 0, 0)
    profiles.on_settle(host)
    await profiles.flush()
    await asyncio.sleep(0)  # the future's done callbacks run on the next loop step
    assert len(producer.sent) == 1
    assert registry.get_sample_value("scenetrigger_worker_profile_send_failures_total") == 1
