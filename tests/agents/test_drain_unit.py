"""agents.faust_compat.settle_while_waiting_empty against a fake of Faust's ``Consumer.wait_empty``: the wait
ends only when something acks the taken messages, as at a worker's stop."""

from __future__ import annotations

import asyncio

import pytest

from agents.faust_compat import settle_while_waiting_empty


class FakeConsumer:
    def __init__(self, unacked: int) -> None:
        self.unacked = unacked
        self.waits = 0
        self._empty: asyncio.Event | None = None

    def ack(self) -> None:
        self.unacked = max(0, self.unacked - 1)
        if not self.unacked and self._empty is not None:
            self._empty.set()

    async def wait_empty(self) -> None:
        self.waits += 1
        self._empty = asyncio.Event()
        if self.unacked:
            await self._empty.wait()


def test_wait_empty_ends_once_settle_acks_and_settling_stops_after() -> None:
    consumer = FakeConsumer(unacked=3)
    calls = 0

    def settle() -> None:  # acks one batch per call
        nonlocal calls
        calls += 1
        consumer.ack()

    async def run() -> int:
        settle_while_waiting_empty(consumer, settle, interval_s=0.001)
        settle_while_waiting_empty(consumer, settle, interval_s=0.001)  # idempotent
        await asyncio.wait_for(consumer.wait_empty(), timeout=5)
        after = calls
        await asyncio.sleep(0.02)
        assert calls == after  # no settling once Faust's wait is over
        return after

    assert asyncio.run(run()) >= 3
    assert consumer.waits == 1 and consumer.unacked == 0


def test_a_failing_settle_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer(unacked=1)
    failures = 0

    def settle() -> None:  # the first call raises (a failed trigger send)
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("send failed")
        consumer.ack()

    async def run() -> None:
        settle_while_waiting_empty(consumer, settle, interval_s=0.001)
        await asyncio.wait_for(consumer.wait_empty(), timeout=5)

    asyncio.run(run())
    assert consumer.unacked == 0
    assert "settle while waiting for the streams failed" in caplog.text


def test_both_wrappers_install_on_one_consumer() -> None:
    """Each wrapper keeps its own installed-marker: the worker installs the
    rebalance seek first, and the settle wrapper must still go on."""
    from agents.faust_compat import seek_uncommitted_to_beginning

    class Consumer:
        async def wait_empty(self) -> None: ...

        async def seek_to_committed(self) -> dict[object, int]:
            return {}

    consumer = Consumer()
    original_wait, original_seek = consumer.wait_empty, consumer.seek_to_committed
    seek_uncommitted_to_beginning(consumer, ["t"])
    settle_while_waiting_empty(consumer, lambda: None)
    assert consumer.wait_empty != original_wait
    assert consumer.seek_to_committed != original_seek
