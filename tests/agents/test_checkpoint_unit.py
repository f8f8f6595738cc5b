"""agents.checkpoint: ready() only looks; settle() writes, acks and hands the
changelog writes to the fence; the agent waits for them only once the events
in doubt (settled but not known durable, plus the batch) reach wait_events
(the duplicate bound after a crash)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from agents.checkpoint import Checkpoint, SettleLimits
from agents.engine_host import PartitionHost
from tests.agents.test_app_unit import FakeFuture, ev, make_host

LIMITS = SettleLimits(events=3, age_ms=1_000, wait_events=10)


class ChangelogTable(dict[bytes, bytes]):
    """A table whose writes go to a changelog, one future each (Faust's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[asyncio.Future[None]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append(future)
        return future

    def __setitem__(self, key: bytes, value: bytes) -> None:
        super().__setitem__(key, value)
        self.send_changelog(0, key, value)


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self.tp, self.offset = ("events", 0), offset


class FakeEvent:
    def __init__(self, offset: int) -> None:
        self.message = FakeMessage(offset)

    def ack(self) -> bool:
        return True


class FakeStream:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def _on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        pass

    def _on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        self.acked.append(offset)


def checkpoint(stream: FakeStream, exits: list[int] | None = None) -> Checkpoint:
    return Checkpoint(lambda: stream, asyncio.get_running_loop, None, lambda: 0,
                      (exits if exits is not None else []).append)


def take(host: PartitionHost, offset: int, now: int) -> FakeEvent:
    host.on_event(ev(f"u{offset}", 1_000 + offset, "view", product_id="p"), offset, now)
    event = FakeEvent(offset)
    host.pending.add(event, now)
    return event


async def test_ready_only_looks_and_follows_the_limits() -> None:
    cp = checkpoint(FakeStream())
    host = make_host({})
    assert not cp.ready(host, 0, LIMITS)  # nothing taken
    take(host, 1, 0)
    slow, refused = FakeFuture(False), FakeFuture(True, KafkaTimeoutError())
    host.pending.futures.extend([FakeFuture(True), slow])
    assert not cp.ready(host, 999, LIMITS)  # young and small
    assert not cp.ready(host, 1_000, LIMITS)  # old enough, one send unacked
    assert len(host.pending.futures) == 2 and host.pending.failed is None  # untouched
    slow._done = True
    assert cp.ready(host, 1_000, LIMITS)
    assert not cp.ready(host, 1_000, SettleLimits(None, 2_000))  # the sweep's: age only
    host.pending.futures.append(refused)
    assert cp.ready(host, 1_000, LIMITS)  # settle() raises it
    assert host.pending.failed is None
    with pytest.raises(KafkaTimeoutError):
        cp.settle(host)
    host.revoked = True
    assert not cp.ready(host, 5_000, LIMITS)


async def test_the_agent_waits_for_the_acks_at_wait_events() -> None:
    cp = checkpoint(FakeStream())
    host = make_host({})
    for offset in range(10):
        take(host, offset, 0)
    host.pending.futures.append(FakeFuture(False))
    assert cp.ready(host, 0, LIMITS)  # 10 events: settle, waiting for the acks
    assert not cp.ready(host, 0, SettleLimits(3, 0))  # a sweep never waits


async def test_settle_writes_acks_and_fences_the_changelog_writes() -> None:
    stream = FakeStream()
    cp = checkpoint(stream)
    table = ChangelogTable()
    cp.watch(table)
    host = make_host(table)
    take(host, 1, 0)
    take(host, 2, 0)
    cp.settle(host)
    assert stream.acked == [1, 2] and not host.pending
    assert table.sent and cp.unfenced[0] == table.sent  # both users' states
    fence = asyncio.ensure_future(cp.fence(host))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not fence.done()  # the partition's next batch waits for the changelog
    for future in table.sent:
        future.set_result(None)
    await fence
    assert 0 not in cp.unfenced
    await cp.fence(host)  # nothing left to wait for


async def test_settles_go_on_without_their_changelog_acks_up_to_wait_events() -> None:
    stream = FakeStream()
    cp = checkpoint(stream)
    table = ChangelogTable()
    cp.watch(table)
    host = make_host(table)
    for offset in range(6):
        take(host, offset, 0)
    await cp.settle_when_acked(host, LIMITS.wait_events)  # 6 in doubt: no wait
    assert stream.acked == list(range(6)) and cp.in_doubt(host) == 6
    for offset in range(6, 9):
        take(host, offset, 0)
    assert cp.in_doubt(host) == 9 and not cp.ready(host, 0, SettleLimits(None, 1_000, 10))
    take(host, 9, 0)
    assert cp.ready(host, 0, SettleLimits(None, 1_000, 10))  # 10 in doubt: the agent waits
    settle = asyncio.ensure_future(cp.settle_when_acked(host, LIMITS.wait_events))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not settle.done() and len(stream.acked) == 6  # held by the first settle's writes
    for future in table.sent:
        future.set_result(None)
    await settle
    assert stream.acked == list(range(10)) and cp.in_doubt(host) == 4  # the second settle's


async def test_the_sweep_stops_the_worker_on_a_refused_send() -> None:
    exits: list[int] = []
    cp = checkpoint(FakeStream(), exits)
    host = make_host({})
    take(host, 1, 0)
    host.pending.futures.append(FakeFuture(True, KafkaTimeoutError()))
    cp.settle_ready([host], 10, SettleLimits(None, 0))
    assert exits == [75] and host.pending.messages  # nothing settled
