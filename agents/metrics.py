"""Prometheus metrics of a worker, registered on a registry the caller owns.

Nothing registers at import: tests and several in-process workers each build
their own :class:`WorkerMetrics` on a fresh :class:`CollectorRegistry`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from agents.engine_host import PartitionHost

log = logging.getLogger("agents.metrics")

# Latencies in a live pipeline: 1 ms .. 1 min.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)

RESULT_ACCEPTED = "accepted"
RESULT_REJECTED = "rejected"
RESULT_DUPLICATE = "duplicate"  # redelivered after a restart, already in the user's state


def events_counter(registry: CollectorRegistry) -> Counter:
    """``scenetrigger_events{result, reason}``: events taken (``accepted``,
    reason ""), ``rejected`` by reason, ``duplicate``. The worker and the
    demo's embedded runtime count with this one definition."""
    return Counter("scenetrigger_events", "Events taken, by result (and reason of a reject)",
                   ["result", "reason"], registry=registry)


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    registry: CollectorRegistry
    events: Counter
    triggers: Counter
    event_to_trigger: Histogram
    timer_lag: Histogram
    users_in_state: Gauge
    state_bytes: Gauge
    consumer_lag: Gauge
    ticks: Counter
    partitions: Gauge
    config_reload_failures: Counter
    refused: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WorkerMetrics:
        reg = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=reg,
            events=events_counter(reg),
            triggers=Counter(
                "scenetrigger_triggers", "Triggers emitted, by scene", ["scene"], registry=reg
            ),
            refused=Counter(
                "scenetrigger_triggers_refused",
                "Fires refused, by scene and rule (user_filter, trigger_budget)",
                ["scene", "rule"], registry=reg,
            ),
            event_to_trigger=Histogram(
                "scenetrigger_event_to_trigger_seconds",
                "From the event's Kafka timestamp to its trigger being sent",
                buckets=_LATENCY_BUCKETS, registry=reg,
            ),
            timer_lag=Histogram(
                "scenetrigger_timer_lag_seconds",
                "How late (wall clock) an absence timer fired after its deadline",
                buckets=_LATENCY_BUCKETS, registry=reg,
            ),
            users_in_state=Gauge(
                "scenetrigger_users_in_state", "Users with state on this worker's partitions",
                registry=reg,
            ),
            state_bytes=Gauge(
                "scenetrigger_state_bytes", "Encoded state bytes on this worker's partitions",
                registry=reg,
            ),
            consumer_lag=Gauge(
                "scenetrigger_consumer_lag", "Events not yet processed, per events partition",
                ["partition"], registry=reg,
            ),
            ticks=Counter(
                "scenetrigger_timer_ticks", "Timer ticks sent by the sweep", registry=reg
            ),
            partitions=Gauge(
                "scenetrigger_partitions", "Events partitions this worker runs engines for",
                registry=reg,
            ),
            # The name the config-push path uses too (deploy/alerts.yml alerts on it).
            config_reload_failures=Counter(
                "scenetrigger_config_reload_failures",
                "Config reloads rejected (the running config stayed)", registry=reg,
            ),
        )

    async def refresh(self, hosts: Mapping[int, PartitionHost], consumer: Any,
                      events_topic: str) -> None:
        """The state gauges and each assigned events partition's lag (the
        worker's gauge timer)."""
        self.users_in_state.set(sum(h.store.users for h in hosts.values()))
        self.state_bytes.set(sum(h.store.bytes for h in hosts.values()))
        for tp in consumer.assignment():
            if tp.topic != events_topic:
                continue
            host = hosts.get(tp.partition)
            try:
                highwater = consumer.highwater(tp)
                position = (host.last_offset + 1 if host is not None and host.last_offset >= 0
                            else await consumer.position(tp))
            except Exception:  # a gauge must never break the worker
                log.debug("no lag for %s", tp, exc_info=True)
                continue
            if highwater is not None and position is not None:
                self.consumer_lag.labels(str(tp.partition)).set(max(0, highwater - position))

    def forget_lag(self, partition: int) -> None:
        """A partition that left this worker has no lag here."""
        with contextlib.suppress(KeyError):
            self.consumer_lag.remove(str(partition))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0 when absent): for tests and summaries."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else got


def serve_metrics(metrics: WorkerMetrics, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` from a daemon thread; returns the server (``shutdown()``)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
