"""Worker settings: everything ``create_app`` needs, in one frozen value.

Built by ``scenetrigger worker`` from its flags, by tests and by the benchmark
directly. Durations are integer milliseconds, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents.errors import AgentError
from config.models import AppConfig

ClockMode = Literal["wall", "event"]
StoreKind = Literal["rocksdb", "memory"]


class WorkerSettingsError(AgentError):
    """Worker settings that cannot work together."""


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Kafka topic names. ``ticks`` must have as many partitions as ``events``
    (the app creates both with ``partitions``): a tick for partition p is
    consumed by the worker that owns events partition p."""

    events: str
    triggers: str
    dead_letters: str
    ticks: str
    # The decision log the worker writes its fires and filter refusals to
    # (deliver, journeys and serve write theirs to the same topic).
    decisions: str = "scenetrigger-decisions"  # agents.topics.DECISIONS
    # Audience enter/exit (compacted; triggers/audiences/record.py), written
    # only with an `audiences:` config.
    audiences: str = "scenetrigger-audiences"  # agents.topics.AUDIENCES
    # Each changed user's latest profile (compacted; agents/live_profiles.py).
    profiles: str = "scenetrigger-profiles"  # agents.topics.PROFILES

    @classmethod
    def with_prefix(cls, prefix: str) -> TopicNames:
        return cls(
            events=f"{prefix}.events",
            triggers=f"{prefix}.triggers",
            dead_letters=f"{prefix}.dead-letters",
            ticks=f"{prefix}.ticks",
            decisions=f"{prefix}.decisions",
            audiences=f"{prefix}.audiences",
            profiles=f"{prefix}.profiles",
        )


def default_topics() -> TopicNames:
    from agents import topics  # the shared names, also used by produce and collector

    return TopicNames(
        events=topics.EVENTS,
        triggers=topics.TRIGGERS,
        dead_letters=topics.DEAD_LETTERS,
        ticks=topics.TICKS,
        decisions=topics.DECISIONS,
        audiences=topics.AUDIENCES,
        profiles=topics.PROFILES,
    )


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    config: AppConfig
    app_id: str = "scenetrigger"
    broker: str = "kafka://127.0.0.1:9092"
    topics: TopicNames = field(default_factory=default_topics)
    partitions: int = 4
    state_dir: Path = Path(".state")
    store: StoreKind = "rocksdb"
    clock: ClockMode = "wall"
    sweep_interval_ms: int = 500
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    web_port: int | None = None
    # Kafka group membership: a killed worker's partitions move after this.
    session_timeout_ms: int = 60_000
    commit_interval_ms: int = 2_800
    standby_replicas: int = 1
    # Of the topics Faust creates (changelog, leader topic) should it create
    # any: `scenetrigger worker` creates them first (agents.replication).
    replication_factor: int = 1
    # Producer batching window: each produce request is a syscall round, which
    # dominates at linger 0 (one request per changelog write or trigger).
    producer_linger_ms: int = 5
    # Faust's 16 KiB default batch with one batch in flight per partition caps
    # the changelog at ~batch/RTT per partition and backs up the send buffer.
    producer_max_batch_bytes: int = 512 * 1024
    # A partition's staged states are written (and its messages acked) once
    # this many events or this much time has gathered and its triggers are
    # acknowledged; a user changed several times in that window is written
    # (one changelog message) once. Triggers themselves are sent at once. At
    # ``max_pending`` events the agent waits for the trigger acks: small
    # bounds (500 events / 20 ms, max 5,000) made the agent wait on every few
    # records of a batched topic, behind the changelog in Faust's producer
    # buffer (bench/worker.py: 3.4k -> 11-22k events/s, 79 -> 23-30 us CPU per event).
    settle_batch: int = 20_000
    settle_ms: int = 200
    max_pending: int = 100_000
    # Decoded user states kept per partition (the table stays the truth).
    cache_users: int = 50_000
    # How often the consumer-lag / state gauges are refreshed.
    gauge_interval_ms: int = 5_000
    # Follow the config source (0: off): the versioned store when
    # ``config_store`` is given (a factory: the store is opened on the
    # worker's own loop), else the ``config_path`` file.
    reload_interval_ms: int = 0
    config_path: Path | None = None
    config_store: Callable[[], Any] | None = None
    config_digest: str = ""  # of the config text in force at the start
    experiment: Any = None  # config.experiment.RunningExperiment in force at the start
    # Publish each changed user's profile on topics.profiles (agents/live_profiles.py).
    live_profiles: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.partitions < 1:
            problems.append("partitions must be >= 1")
        if not 1 <= self.settle_batch <= self.max_pending:
            problems.append(f"settle batch must be within 1..{self.max_pending} (max pending)")
        if not 1 <= self.max_pending <= 1_000_000:
            problems.append("max pending must be within 1..1000000 events")
        if self.settle_ms < 1:
            problems.append("settle interval must be >= 1 ms")
        if self.sweep_interval_ms < 10:
            problems.append("sweep interval must be >= 10 ms")
        if self.replication_factor < 1:
            problems.append("replication factor must be >= 1")
        if self.session_timeout_ms < 6_000:
            problems.append("session timeout must be >= 6000 ms (the broker's minimum)")
        if self.store not in ("rocksdb", "memory"):
            problems.append(f"store must be rocksdb or memory, not {self.store!r}")
        if self.clock not in ("wall", "event"):
            problems.append(f"clock must be wall or event, not {self.clock!r}")
        if self.reload_interval_ms and self.config_path is None and self.config_store is None:
            problems.append("config reload needs a config file or a config store")
        names = (self.topics.events, self.topics.triggers, self.topics.dead_letters,
                 self.topics.ticks, self.topics.decisions, self.topics.audiences,
                 self.topics.profiles)
        if len(set(names)) != len(names):
            problems.append("topic names must differ")
        if problems:
            raise WorkerSettingsError("invalid worker settings: " + "; ".join(problems))

    @property
    def store_url(self) -> str:
        return "rocksdb://" if self.store == "rocksdb" else "memory://"

    @property
    def table_name(self) -> str:
        return "user-state"
