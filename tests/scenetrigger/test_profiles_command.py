"""``scenetrigger profiles`` on a real broker and a real redis-server (review
findings): an erased user's profile that lands after their tombstone (a
late record from a worker that lost the partition, or a lost tombstone) is
not written back; with ``--until-end`` a partition lost in a rebalance is
its new owner's to read (asking its position raised), and the Redis client
is closed when the consumer cannot be made."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agents.kafka_clients import new_consumer, new_producer
from agents.producer import ensure_topics
from channels.audience.live_profile import LiveProfileStore, encode_live_profile
from channels.audience.live_profile_feed import ProfileFeed
from channels.redis_client import redis_client
from config.hash_keys import HASH_KEY_ENV
from scenetrigger.cli.main import main
from tests.agents.worker_support import unique
from tests.config.test_hash_keys import K1, keyed_subject
from triggers.state import UserState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PER_PARTITION = 6


class GatedStore(LiveProfileStore):
    """Holds the ``hold_at``-th put until ``gate`` opens (a slow Redis while
    the group rebalances)."""

    def __init__(self, client: Any, prefix: str, hold_at: int) -> None:
        super().__init__(client, prefix)
        self.puts = 0
        self.hold_at = hold_at
        self.held = asyncio.Event()
        self.gate = asyncio.Event()

    async def put(self, user_id: str, profile: Any, updated_ms: int) -> bool:
        self.puts += 1
        if self.puts == self.hold_at:
            self.held.set()
            await self.gate.wait()
        return await super().put(user_id, profile, updated_ms)


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.2)


def test_an_erased_users_late_profile_is_not_written_back(
        kafka_bootstrap: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, K1)
    prefix, tags = unique("prof-erased"), f"pe{uuid.uuid4().hex[:6]}:"
    profile = encode_live_profile(UserState().profile, 1_700_000_000_000)
    late = encode_live_profile(UserState().profile, 1_700_000_000_500)
    consume = ["profiles", "--broker", kafka_bootstrap, "--topic-prefix", prefix,
               "--group", f"{prefix}-profiles", "--redis-url", redis_url,
               "--tags-prefix", tags, "--until-end", "--json", "--no-progress"]
    assert main(consume) == 0  # creates the topic (one partition: the order below holds)
    capsys.readouterr()
    # scenetrigger erase: its receipt ("st:", the default delivery.redis_prefix) ...
    asyncio.run(_set(redis_url, f"st:erasure:{keyed_subject(K1, 'ann')}",
                     orjson.dumps({"erased_at_ms": 1_700_000_000_100, "removed": {}})))
    # ... the tombstones, then a profile from the worker that had lost the partition
    asyncio.run(_send(kafka_bootstrap, f"{prefix}.profiles", [
        (b"ann", profile), (b"bob", profile), (b"ann", None), (b"ann", late)]))
    assert main(consume) == 0
    assert asyncio.run(_profiles(redis_url, tags, ["ann", "bob"])) == [False, True], \
        "the erased user's profile was written back"
    summary = orjson.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["results"]["erased"] == 1


async def _send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        for key, value in records:  # one by one: in this order on the partition
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def _set(url: str, key: str, value: bytes) -> None:
    client = redis_client(url)
    try:
        await client.set(key, value)
    finally:
        await client.aclose()


async def _profiles(url: str, prefix: str, users: list[str]) -> list[bool]:
    client = redis_client(url)
    try:
        store = LiveProfileStore(client, prefix)
        return [await store.get(user) is not None for user in users]
    finally:
        await client.aclose()


async def test_until_end_survives_a_rebalance_that_takes_a_partition(
        kafka_bootstrap: str, redis_url: str) -> None:
    topic, group = unique("prof-rb") + ".profiles", unique("prof-rb-group")
    await ensure_topics(kafka_bootstrap, [topic], 2, configs={topic: {"cleanup.policy": "compact"}})
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    try:
        for partition in (0, 1):
            for n in range(PER_PARTITION):
                await producer.send_and_wait(topic, key=f"u{partition}-{n}".encode(),
                                             value=encode_live_profile(UserState().profile, 1),
                                             partition=partition)
    finally:
        await producer.stop()
    client = redis_client(redis_url)
    store = GatedStore(client, f"rb{uuid.uuid4().hex[:6]}:", hold_at=3)
    first = new_consumer(kafka_bootstrap, topic, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    second = new_consumer(kafka_bootstrap, topic, group_id=group, enable_auto_commit=False,
                          auto_offset_reset="earliest")
    await first.start()
    run = None
    try:
        # one record a batch: both partitions' ends are taken before the hold
        feed = ProfileFeed(store, first, registry=CollectorRegistry(), max_records=1,
                           concurrency=1, poll_ms=100)
        run = asyncio.create_task(feed.run(until_end=True))
        await asyncio.wait_for(store.held.wait(), 60)
        assert len(first.assignment()) == 2
        await second.start()  # joins the group: one partition moves to it

        async def moved() -> bool:
            if run.done():
                return True
            await second.getmany(timeout_ms=100)
            return len(first.assignment()) == 1 and len(second.assignment()) == 1

        await until("the rebalance", moved)
        store.gate.set()
        counts = await asyncio.wait_for(run, 60)  # raised IllegalStateError before the fix
        kept = next(iter(first.assignment()))
        assert await first.position(kept) == PER_PARTITION
        assert counts.records >= PER_PARTITION
    finally:
        store.gate.set()
        if run is not None and not run.done():
            run.cancel()
        await first.stop()
        await second.stop()
        await client.aclose()


def test_the_redis_client_is_closed_when_the_consumer_cannot_be_made(
        kafka_bootstrap: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import agents.kafka_clients
    import channels.redis_client

    closed: list[bool] = []

    def tracked_client(url: str, **options: Any) -> Any:
        client = redis_client(url, **options)
        close = client.aclose

        async def aclose() -> None:
            closed.append(True)
            await close()

        client.aclose = aclose
        return client

    def refused(*_args: Any, **_options: Any) -> Any:
        raise ValueError("a consumer option the client library refuses")

    monkeypatch.setattr(channels.redis_client, "redis_client", tracked_client)
    monkeypatch.setattr(agents.kafka_clients, "new_consumer", refused)
    with pytest.raises(ValueError, match="refuses"):
        main(["profiles", "--broker", kafka_bootstrap, "--topic-prefix", unique("prof-close"),
              "--redis-url", redis_url, "--until-end", "--no-progress"])
    assert closed == [True], "the Redis client was left open"
