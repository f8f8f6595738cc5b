"""The worker's engines, one per events partition assigned to it.

An engine is built (timers rebuilt from the recovered table) on first use and
dropped when its partition leaves the worker; a dropped engine is marked
revoked, since the agent may hold it across an await, and never writes again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from agents.engine_host import PartitionHost
from agents.faust_compat import PartitionTable, partition_items
from agents.heap import process_heap
from agents.metrics import WorkerMetrics
from agents.partition_store import PartitionStore
from agents.settings import WorkerSettings
from config.models import AppConfig
from triggers.engine import Arm

log = logging.getLogger(__name__)


class Hosts(dict[int, PartitionHost]):
    """Engines by events partition, over the worker's user-state table."""

    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics, table: Any,
                 config: Callable[[], AppConfig],
                 arm: Callable[[], Arm | None] = lambda: None) -> None:
        super().__init__()
        self._arm = arm  # a config experiment's candidate scenes (config.experiment)
        self._settings = settings
        self._metrics = metrics
        self._table = table
        self._config = config  # the config in force (hot reloads replace it)
        self._heap = process_heap()  # the collector skips cached states
        # Every audience configured in this worker's life: a partition built
        # after a reload that removed one still holds its members' keys on
        # PREFIX.audiences, and an erasure there must tombstone those too.
        self._audience_names: tuple[str, ...] = tuple(config().audiences)

    def _audiences_ever(self, config: AppConfig) -> tuple[str, ...]:
        self._audience_names = tuple(dict.fromkeys((*self._audience_names, *config.audiences)))
        return self._audience_names

    def host(self, partition: int) -> PartitionHost:
        host = self.get(partition)
        if host is None:
            host = self[partition] = self._build(partition)
        return host

    def _build(self, partition: int) -> PartitionHost:
        settings, table = self._settings, self._table
        store = PartitionStore(PartitionTable(table, partition, settings.store == "memory"),
                               lambda: partition_items(table, partition),
                               settings.cache_users, self._heap)
        config = self._config()
        host = PartitionHost.build(partition, store, config.scene_list(), config.engine.limits(),
                                   config.engine.input_rules(), settings.clock)
        host.host.set_arm(self._arm())  # before the timers: they follow each user's arm
        host.host.audiences = config.audience_tracker(store)  # re-armed by rebuild()
        host.audience_names = self._audiences_ever(config)
        started = time.perf_counter()
        armed = host.rebuild()
        log.info("partition ready", extra={
            "partition": partition, "users": store.users, "timers": armed,
            "clock": host.engine.clock, "seconds": round(time.perf_counter() - started, 3)})
        return host

    def drop(self, partition: int) -> None:
        host = self.pop(partition, None)
        if host is not None:
            host.revoked = True  # the agent may hold it across an await
        self._metrics.forget_lag(partition)

    def drop_unsettled(self, partitions: Collection[int]) -> None:
        """A rebalance starts: an engine with unsettled work is dropped. Its staged
        states are never written and its unacked messages come again from the
        committed offset to whoever owns the partition next (maybe us)."""
        for partition in partitions:
            host = self.get(partition)
            if host is not None and not host.idle:
                self.drop(partition)

    def keep(self, mine: Collection[int], *, build: bool = False) -> None:
        """Drop the engines of partitions not in ``mine``; with ``build``, build
        the missing ones (after table recovery)."""
        for partition in [p for p in self if p not in mine]:
            self.drop(partition)
        if build:
            for partition in sorted(set(mine) - self.keys()):
                self.host(partition)
        self._metrics.partitions.set(len(self))

    def reconfigure(self, config: AppConfig) -> None:
        """Hot reload: every engine takes the new scenes (and a config
        experiment's candidate scenes for its users), keeping user state."""
        arm = self._arm()
        audience_names = self._audiences_ever(config)
        for host in self.values():
            host.reconfigure(config.scene_list(), config.engine.limits(),
                             config.engine.input_rules(), arm)
            host.host.audiences = tracker = config.audience_tracker(host.store)
            # kept across reloads: an erasure deletes the keys of removed audiences too
            host.audience_names = audience_names
            if tracker is not None:  # a reload is rare: one pass over the partition's users
                tracker.rebuild()
