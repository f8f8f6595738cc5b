"""The worker's live profile records without Kafka (agents/live_profiles.py):
one record per changed user per settle, holding the profile the engine's
state has, a tombstone for an erased user, nothing for an untouched one, a refused
send counted, a refused tombstone sent again until Kafka takes it, and a
partition that leaves the worker taking its unsent profiles with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from agents.engine_host import PartitionHost
from agents.live_profiles import LiveProfiles
from agents.partition_store import PartitionStore
from channels.audience.live_profile import decode_live_profile
from config.loader import load_config_text
from triggers.events import ERASE, Event

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
    """Faust's producer.send: hands back a future Kafka completes (or refuses);
    ``taken`` is what is on the topic."""

    def __init__(self, refuse: bool = False, refuse_tombstones: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.taken: list[tuple[bytes, bytes | None]] = []
        self.refuse = refuse
        self.refuse_tombstones = refuse_tombstones  # the first n tombstones time out

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: Any,
                   timestamp: Any, headers: Any) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuse or (value is None and self.refuse_tombstones):
            self.refuse_tombstones -= value is None
            future.set_exception(RuntimeError("not leader"))
        else:
            self.taken.append((key, value))
            future.set_result(None)
        return future


def feed(producer: FakeProducer, clock: list[int]) -> tuple[LiveProfiles, CollectorRegistry]:
    registry = CollectorRegistry()
    return LiveProfiles("p.profiles", lambda: producer, lambda: clock[0], registry,
                        retry_s=0.01), registry


def erase(user: str, ts: int) -> Event:
    return Event(user, ts, ERASE, {"user_id": user, "ts": ts, "type": ERASE})


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


async def test_a_refused_tombstone_is_sent_again_until_taken() -> None:
    # Left out, the erased user's profile stays the last record of their key
    # on the compacted topic, and the profiles consumer writes it back.
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    producer = FakeProducer(refuse_tombstones=2)
    profiles, registry = feed(producer, [NOW])
    host.on_event(ev("ann", 1_000, "view", product_id="a"), 0, 0)
    profiles.on_settle(host)
    host.store.flush()
    host.on_event(ev("bob", 1_001, "view", product_id="b"), 1, 0)
    host.on_event(erase("ann", 1_002), 2, 0)
    profiles.on_settle(host)
    host.store.flush()
    await asyncio.wait_for(profiles.flush(), 5)
    assert [(k, v is None) for k, v in producer.taken] == [
        (b"ann", False), (b"bob", False), (b"ann", True)]
    assert [k for _, k, v in producer.sent if v is None] == [b"ann"] * 3
    assert registry.get_sample_value("scenetrigger_worker_profile_send_failures_total") == 2


async def test_a_partition_that_left_sends_no_late_profile() -> None:
    # A late profile from the old owner could land after the new owner's
    # tombstone of the user; a tombstone of its own still goes.
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    producer = FakeProducer()
    profiles, registry = feed(producer, [NOW])
    host.on_event(ev("bob", 999, "view", product_id="b"), 0, 0)
    host.store.flush()
    host.on_event(ev("ann", 1_000, "view", product_id="a"), 0, 0)
    host.on_event(erase("bob", 1_001), 1, 0)
    profiles.on_settle(host)  # queued: the sending task has not run yet
    host.store.flush()
    profiles.revoke({host.partition})
    host.on_event(ev("cat", 1_002, "view", product_id="c"), 2, 0)  # settled while it leaves
    profiles.on_settle(host)
    host.store.flush()
    await profiles.flush()
    assert producer.taken == [(b"bob", None)]
    assert registry.get_sample_value("scenetrigger_worker_profiles_dropped_total") == 2
    profiles.assign({host.partition})  # back to this worker: its profiles go again
    host.on_event(ev("cat", 1_003, "view", product_id="d"), 3, 0)
    profiles.on_settle(host)
    host.store.flush()
    await profiles.flush()
    assert [k for k, _ in producer.taken] == [b"bob", b"cat"]


async def test_the_worker_drops_the_profiles_of_a_revoked_partition(tmp_path: Path) -> None:
    from aiokafka import TopicPartition

    from agents.app import SceneWorker
    from tests.agents.test_app_unit import settings

    worker = SceneWorker(settings(tmp_path, store="memory", live_profiles=True))
    producer = FakeProducer()
    profiles, _ = feed(producer, [NOW])
    worker.live_profiles = profiles
    host = worker.host(1)
    host.on_event(ev("ann", 1_000, "view", product_id="a"), 0, 0)
    profiles.on_settle(host)
    await worker._on_revoked(revoked=[TopicPartition(worker.settings.topics.events, 1)])
    await profiles.flush()
    assert producer.taken == []
