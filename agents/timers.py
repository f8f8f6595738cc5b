"""The wall-clock timer sweep and its tick messages.

Faust timers cannot write tables, so the sweep only *decides*: for each local
partition whose earliest live deadline is due, it sends one tick to that
partition of the ticks topic (co-partitioned with events). The agent that
owns the partition takes the tick inside stream iteration, advances the
engine to the wall clock and writes the table. A tick carries no authority:
it only says "look at your clock now", so a duplicate, late or misrouted
tick is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from agents.engine_host import PartitionHost

# A tick not answered within this time (lost in a rebalance) is sent again.
TICK_RESEND_MS = 5_000


@dataclass(frozen=True, slots=True)
class Tick:
    partition: int
    deadline: int  # the due deadline that caused it (for logs)
    sent_ms: int

    def encode(self) -> bytes:
        return orjson.dumps({"partition": self.partition, "deadline": self.deadline,
                             "sent_ms": self.sent_ms})


def decode_tick(data: bytes | None) -> Tick | None:
    """A tick message, or None when it is not one (never raises)."""
    if not data:
        return None
    try:
        obj = orjson.loads(data)
        return Tick(int(obj["partition"]), int(obj["deadline"]), int(obj["sent_ms"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def due_ticks(hosts: Mapping[int, PartitionHost], now_ms: int,
              resend_after_ms: int = TICK_RESEND_MS) -> list[Tick]:
    """Ticks to send now: one per partition with a due timer and no tick in
    flight. Marks those partitions as having a tick in flight."""
    ticks = []
    for partition, host in list(hosts.items()):
        deadline = host.due(now_ms)
        if deadline is None:
            continue
        sent = host.tick_sent_ms
        if sent is not None and now_ms - sent < resend_after_ms:
            continue
        host.tick_sent_ms = now_ms
        ticks.append(Tick(partition, deadline, now_ms))
    return ticks
