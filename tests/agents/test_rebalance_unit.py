"""agents.faust_compat's rebalance fixes against a fake of the Faust consumer methods it uses."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, NamedTuple

from agents.faust_compat import hold_flow_until_seek, seek_uncommitted_to_beginning


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, committed: Mapping[TP, int | None], earliest: Mapping[TP, int]) -> None:
        self.committed = dict(committed)
        self.earliest = dict(earliest)
        self.sought: dict[TP, int] = {}
        self.committed_calls = 0
        self.flow_active = True

    async def seek_to_committed(self) -> Mapping[TP, int | None]:
        self.committed_calls += 1
        return self.committed

    async def earliest_offsets(self, *tps: TP) -> Mapping[TP, int]:
        return {tp: self.earliest[tp] for tp in tps}

    async def seek_wait(self, offsets: Mapping[TP, int]) -> None:
        self.sought.update(offsets)

    def stop_flow(self) -> None:
        self.flow_active = False


def test_uncommitted_stream_partitions_are_sought_to_their_beginning() -> None:
    fresh, zero, done, other = TP("e", 0), TP("e", 1), TP("e", 2), TP("changelog", 0)
    consumer: Any = FakeConsumer({fresh: None, zero: 0, done: 40, other: None},
                                 {fresh: 7, zero: 0, done: 0, other: 0})
    seek_uncommitted_to_beginning(consumer, ["e"])
    seek_uncommitted_to_beginning(consumer, ["e"])  # idempotent: wrapped once
    committed = asyncio.run(consumer.seek_to_committed())
    assert committed == {fresh: None, zero: 0, done: 40, other: None}  # Faust sees the same map
    assert consumer.committed_calls == 1
    # None and 0 are what aiokafka's seek_to_committed leaves alone; other topics are Faust's.
    assert consumer.sought == {fresh: 7, zero: 0}


def test_nothing_sought_when_every_partition_has_a_commit() -> None:
    consumer: Any = FakeConsumer({TP("e", 0): 3}, {TP("e", 0): 0})
    seek_uncommitted_to_beginning(consumer, ["e"])
    asyncio.run(consumer.seek_to_committed())
    assert consumer.sought == {}


def test_flow_is_held_until_faust_seeks() -> None:
    consumer: Any = FakeConsumer({}, {})
    hold_flow_until_seek(consumer)
    assert consumer.flow_active is False
