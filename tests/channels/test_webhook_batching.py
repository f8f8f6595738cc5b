"""The Batcher behind batched webhook and inbox sends (unit)."""

from __future__ import annotations

import asyncio

import pytest

from channels.transports.send_batcher import Batcher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def flush(self, items: list[int]) -> list[str]:
        self.batches.append(items)
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("boom")
        return [f"done {i}" for i in items]


def batcher(rec: Recorder, size: int = 3, linger_ms: int = 10_000) -> Batcher[int, str]:
    return Batcher(rec.flush, size, linger_ms, lambda item, exc: f"failed {item}: {exc}")


async def test_full_batches_leave_at_once_in_order() -> None:
    rec = Recorder()
    b = batcher(rec)
    results = await asyncio.gather(*(b.submit(i) for i in range(6)))
    assert results == [f"done {i}" for i in range(6)]
    assert rec.batches == [[0, 1, 2], [3, 4, 5]]


async def test_a_partial_batch_leaves_after_the_linger() -> None:
    rec = Recorder()
    b = batcher(rec, size=10, linger_ms=20)
    assert await asyncio.wait_for(b.submit(7), timeout=5) == "done 7"
    assert rec.batches == [[7]]


async def test_a_failing_flush_answers_every_caller() -> None:
    b = batcher(Recorder(fail=True), size=2)
    assert list(await asyncio.gather(b.submit(1), b.submit(2))) == \
        ["failed 1: boom", "failed 2: boom"]


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    rec = Recorder()
    b = batcher(rec, size=2)
    first = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await b.submit(2) == "done 2"
    assert rec.batches == [[1, 2]]


async def test_close_sends_what_waits() -> None:
    rec = Recorder()
    b = batcher(rec, size=5)
    waiting = asyncio.ensure_future(b.submit(3))
    await asyncio.sleep(0)
    await b.close()
    assert await waiting == "done 3"
