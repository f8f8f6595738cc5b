"""The worker's heap freezing (agents.heap): frozen after a settle, unfrozen
every rescan period until a full collection has looked at everything."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agents.heap import HeapFreezer


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Clock:
    def __init__(self) -> None:
        self.s = 0.0

    def __call__(self) -> float:
        return self.s


def test_a_settle_freezes_what_is_alive() -> None:
    kept = [[i] for i in range(1_000)]  # alive, tracked containers
    HeapFreezer(clock=Clock()).settled()
    assert gc.get_freeze_count() >= len(kept)


def test_a_rescan_unfreezes_and_waits_for_a_full_collection() -> None:
    clock = Clock()
    heap = HeapFreezer(rescan_s=60.0, clock=clock)
    heap.settled()
    assert gc.get_freeze_count() > 0
    clock.s = 60.0
    heap.settled()  # the rescan: everything back where the collector sees it
    assert gc.get_freeze_count() == 0
    heap.settled()  # no full collection yet: stays unfrozen
    assert gc.get_freeze_count() == 0
    # A frozen cycle would have leaked; unfrozen, the full collection frees it.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
    heap.settled()
    assert gc.get_freeze_count() > 0


def test_a_disabled_collector_is_left_alone() -> None:
    gc.disable()
    try:
        HeapFreezer(clock=Clock()).settled()
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_a_flush_freezes_through_the_store() -> None:
    from agents.partition_store import PartitionStore
    from triggers.state import UserState

    table: dict[bytes, bytes] = {}
    store = PartitionStore(table, lambda: list(table.items()),
                           heap=HeapFreezer(clock=Clock()))
    store.put("u1", UserState())
    assert store.flush() == 1
    assert gc.get_freeze_count() > 0
    assert set(table) == {b"u1"}


def test_a_long_batch_freezes_every_growth_states() -> None:
    from agents.heap import GROWTH

    heap = HeapFreezer(clock=Clock())
    for _ in range(GROWTH - 1):
        heap.grew()
    assert gc.get_freeze_count() == 0
    heap.grew()
    assert gc.get_freeze_count() > 0
