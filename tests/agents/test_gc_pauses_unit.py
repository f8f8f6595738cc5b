"""The process's heap freezer as a garbage-collector callback (agents.heap):
the survivors of a full collection are frozen, later full collections scan
only newer objects, and once per period everything is given back and a
full collection frees the cycles that were frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agents.heap import HeapFreezer, freeze_after_full_collections


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Node:
    """A reference cycle's member: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def policy() -> Iterator[tuple[HeapFreezer, Clock]]:
    clock = Clock()
    installed = HeapFreezer(60.0, clock)
    gc.callbacks.append(installed)
    try:
        yield installed, clock
    finally:
        gc.callbacks.remove(installed)
        gc.unfreeze()


def test_survivors_of_a_full_collection_are_frozen(
        policy: tuple[HeapFreezer, Clock]) -> None:
    gc.unfreeze()
    kept = [Node() for _ in range(1000)]
    gc.collect()  # a full collection
    assert gc.get_freeze_count() >= len(kept)
    assert not any(type(o) is Node for o in gc.get_objects())  # no generation scans them


def test_a_cycle_frozen_waits_for_the_period_then_goes(
        policy: tuple[HeapFreezer, Clock]) -> None:
    _, clock = policy
    gc.unfreeze()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect()  # frozen while reachable
    frozen = gc.get_freeze_count()
    assert frozen > 0
    del a, b  # now cyclic garbage, frozen: later full collections do not see it
    gc.collect()
    assert gc.get_freeze_count() >= frozen
    clock.now = 61.0  # the period is over: this full collection gives everything back
    gc.collect()
    assert gc.get_freeze_count() == 0
    assert any(type(o) is Node for o in gc.get_objects())  # back in the oldest generation
    freed = gc.collect()  # the next full collection scans it all: the cycle goes
    assert freed >= 2
    assert not any(type(o) is Node for o in gc.get_objects())


def test_installed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import heap

    monkeypatch.setattr(heap, "_PROCESS", None)  # not the test process's for good
    first = freeze_after_full_collections()
    try:
        assert freeze_after_full_collections() is first
        assert sum(c is first for c in gc.callbacks) == 1
    finally:
        gc.callbacks.remove(first)
        gc.unfreeze()
