"""A worker's partitions in one process, for identity tests: one
:class:`PartitionHost` per partition (a dict as its table), the events topic
as per-partition queues, the identity records a host sends (merges,
re-addressed events, returns, erasures) appended to the queue of their key's
partition. Nothing is faked but Kafka's transport and Faust's table."""

from __future__ import annotations

import zlib
from collections import Counter, deque
from typing import Any

import orjson

from agents.engine_host import PartitionHost
from agents.partition_store import PartitionStore
from config.loader import load_config_text
from triggers.errors import EventRejected
from triggers.events import Event, Trigger
from triggers.host import EngineHost

CONFIG = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 2, within: 1h}
  abandon: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
"""


def event_of(fields: dict[str, Any]) -> Event:
    return Event(fields["user_id"], fields["ts"], fields["type"], fields)


_CONFIGS: dict[str, Any] = {}


def _config(text: str) -> Any:
    found = _CONFIGS.get(text)
    if found is None:
        found = _CONFIGS[text] = load_config_text(text)
    return found


class Cluster:
    """``partitions`` hosts; :meth:`send` produces, :meth:`step` consumes one
    record of a partition, :meth:`drain` consumes until nothing is left."""

    def __init__(self, partitions: int, config: str = CONFIG) -> None:
        cfg = _config(config)
        self.hosts: list[PartitionHost] = []
        for p in range(partitions):
            table: dict[bytes, bytes] = {}
            store = PartitionStore(table, lambda t=table: list(t.items()))  # type: ignore[misc]
            host = PartitionHost.build(p, store, cfg.scene_list(), cfg.engine.limits(),
                                       cfg.engine.input_rules(), "event")
            host.rebuild()
            self.hosts.append(host)
        self.queues: list[deque[bytes]] = [deque() for _ in range(partitions)]
        self.order: deque[int] = deque()  # partitions in the order records were sent
        self.offsets = [0] * partitions
        self.triggers: list[Trigger] = []
        self.rejected: Counter[str] = Counter()
        self.forwarded = 0  # records the hosts sent (not the input)
        self.consumed = 0

    def partition(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % len(self.hosts)

    def send(self, fields: dict[str, Any]) -> None:
        p = self.partition(fields["user_id"])
        self.queues[p].append(orjson.dumps(fields))
        self.order.append(p)

    def step(self, p: int) -> None:
        """Consume the next record of partition ``p``."""
        value = self.queues[p].popleft()
        self.order.remove(p)
        self.consumed += 1
        self.offsets[p] += 1
        host = self.hosts[p]
        try:
            fired = host.on_event(event_of(orjson.loads(value)), self.offsets[p] << 16, 0)
        except EventRejected as exc:
            self.rejected[exc.reason] += 1
            fired = []
        self.triggers += fired or []
        for key, out in host.outbox:
            self.forwarded += 1
            q = self.partition(key)
            self.queues[q].append(out)
            self.order.append(q)
        host.outbox.clear()

    def drain(self, limit: int = 10_000) -> int:
        """Consume in the order records were sent until none is left; fails
        (a forwarding loop) past ``limit`` records."""
        steps = 0
        while self.order:
            steps += 1
            assert steps <= limit, f"still forwarding after {limit} records: a loop"
            self.step(self.order[0])
        return steps

    def finish(self, now: int) -> list[Trigger]:
        for host in self.hosts:
            self.triggers += host.host.advance(now)
        return self.triggers


class Reference:
    """The rule as one host holding every id applies it (replay's), plus
    erasure as the worker does it: the user's state, its alias, and the
    aliases of the ids merged into it."""

    def __init__(self, config: str = CONFIG) -> None:
        cfg = _config(config)
        self.host = EngineHost(cfg.scene_list(), cfg.engine.limits(), cfg.engine.input_rules())
        self.triggers: list[Trigger] = []

    def send(self, fields: dict[str, Any]) -> None:
        event = event_of(fields)
        if event.type == "erase":  # moves the clock like any record, then forgets
            host = self.host
            self.triggers += host.advance(event.ts)
            todo = [event.user_id]
            while todo:  # the ids merged into an erased id are erased, theirs too
                user = todo.pop()
                todo += host.merged.pop(user, {})
                host.aliases.pop(user, None)
                host.engine.store.delete(user)
            return
        self.triggers += self.host.take(event)

    def finish(self, now: int) -> list[Trigger]:
        self.triggers += self.host.advance(now)
        return self.triggers
