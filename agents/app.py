"""The worker: topics, the user-state table, one agent, the sweep.

One agent (concurrency 1, at-least-once) reads the events and ticks topics
together, so every table write of a partition happens in one sequence, inside
stream iteration of a message of that partition. Each events partition has
its own engine (agents.partitions); batches settle through agents.checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from agents.checkpoint import (
    EXIT_TRIGGER_SEND_FAILED,
    SEND_ERRORS,
    Checkpoint,
    SettleLimits,
    TriggerHook,
)
from agents.engine_host import PartitionHost
from agents.faust_app import new_app
from agents.faust_compat import (
    allow_producer_buffer,
    check_versions,
    hold_flow_until_seek,
    idempotent_producers,
    seek_uncommitted_to_beginning,
    settle_while_waiting_empty,
)
from agents.faust_compat import (
    rebalancing as is_rebalancing,
)
from agents.live_profiles import publish_live_profiles
from agents.metrics import RESULT_ACCEPTED, RESULT_DUPLICATE, WorkerMetrics
from agents.outputs import Outbox, Outputs
from agents.partitions import Hosts
from agents.replication import topic_configs
from agents.settings import WorkerSettings
from agents.stored_state import position
from agents.timers import due_ticks
from config.clock import wall_ms
from config.models import AppConfig
from triggers.engine import Arm
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import Event, Trigger

log = logging.getLogger(__name__)

__all__ = ["EXIT_TRIGGER_SEND_FAILED", "REASON_STATE_ERROR", "SceneWorker", "TriggerHook",
           "create_app"]

REASON_STATE_ERROR = "state_error"


class SceneWorker:
    """Everything one worker process holds; ``app`` is the Faust app."""

    def __init__(self, settings: WorkerSettings, *, metrics: WorkerMetrics | None = None,
                 on_trigger: TriggerHook | None = None,
                 now_ms: Callable[[], int] = wall_ms,
                 fatal: Callable[[int], None] = os._exit) -> None:
        self.settings = settings
        self.config: AppConfig = settings.config
        self.metrics = metrics if metrics is not None else WorkerMetrics.create()
        self.on_trigger = on_trigger
        self._now_ms = now_ms
        self._outputs_declared = False
        self._stream: Any = None
        # Label lookups cost ~1 us per event: bind the per-event children once.
        self._accepted = self.metrics.events.labels(RESULT_ACCEPTED, "")
        self._duplicate = self.metrics.events.labels(RESULT_DUPLICATE, "")
        check_versions()
        idempotent_producers()
        self.app = new_app(settings)
        # A delivery pipeline hooks in through on_trigger; it runs inside the
        # agent, so it should hand work off (a queue) rather than deliver inline.
        self.checkpoint = Checkpoint(lambda: self._stream, lambda: self.app.loop, on_trigger,
                                     now_ms, fatal)
        self._wire()

    # -- construction ---------------------------------------------------------

    def _topic(self, *names: str, compacting: bool | None = None) -> Any:
        return self.app.topic(*names, partitions=self.settings.partitions, key_type=bytes,
                              value_type=bytes, key_serializer="raw", value_serializer="raw",
                              internal=True, compacting=compacting)

    def _wire(self) -> None:
        s = self.settings
        app = self.app
        self.source = self._topic(s.topics.events, s.topics.ticks)
        self.ticks_topic = self._topic(s.topics.ticks)
        self.triggers_topic = self._topic(s.topics.triggers)
        self.dead_letter_topic = self._topic(s.topics.dead_letters)
        self.decisions_topic = self._topic(s.topics.decisions)
        self.audiences_topic = self._topic(s.topics.audiences, compacting=True)  # latest per key
        # key_type/value_type bytes make the table's serializers "raw".
        self.table = app.Table(s.table_name, default=None, partitions=s.partitions,
                               key_type=bytes, value_type=bytes,
                               extra_topic_configs=topic_configs(s.replication_factor))
        self.outputs = Outputs(s.topics, self.metrics, Outbox(lambda: self.app.producer),
                               self.audiences_topic, self.dead_letter_topic,
                               self.on_trigger is not None)
        self.hosts = Hosts(s, self.metrics, self.table, lambda: self.config, self._arm)
        self.checkpoint.watch(self.table)
        self.live_profiles = publish_live_profiles(self)  # PREFIX.profiles at each settle
        self.table.on_recover(self._on_recovered)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.agent(self.source, name="scenetrigger-scenes", concurrency=1)(self._agent)
        app.timer(interval=s.sweep_interval_ms / 1000, name="scenetrigger-sweep")(self._sweep)
        app.timer(interval=s.gauge_interval_ms / 1000, name="scenetrigger-gauges")(
            self._refresh_gauges)
        from config.reload import ConfigReloader, ReloadMetrics

        # Always: /metrics says which config digest is in force.
        self._reloader = ConfigReloader(
            s.config_path, self.config, store=s.config_store() if s.config_store else None,
            metrics=ReloadMetrics.on(self.metrics.registry, self.metrics.config_reload_failures),
            digest=s.config_digest)
        self._reloader.experiment = s.experiment  # the one in force at the start, if any
        if s.reload_interval_ms and (s.config_path is not None or s.config_store is not None):
            self._reloader.subscribe(self.reconfigure)
            app.timer(interval=s.reload_interval_ms / 1000, name="scenetrigger-reload")(
                self._poll_config)

    @property
    def outbox(self) -> Outbox:
        return self.outputs.outbox

    @outbox.setter
    def outbox(self, outbox: Outbox) -> None:
        self.outputs.outbox = outbox

    # -- partitions -----------------------------------------------------------

    def host(self, partition: int) -> PartitionHost:
        """The partition's engine, built (timers rebuilt from the table) on first use."""
        return self.hosts.host(partition)

    def _mine(self, tps: Any) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.settings.topics.events}

    async def _on_revoked(self, sender: Any = None, revoked: Any = (), **_: Any) -> None:
        self.hosts.drop_unsettled(self._mine(revoked))
        if self.live_profiles is not None:  # no late profile after the new owner's tombstone
            self.live_profiles.revoke(self._mine(revoked))

    async def _on_assigned(self, sender: Any = None, assigned: Any = (), **_: Any) -> None:
        """Drop engines of partitions that left us (before any recovery)."""
        # Before recovery ends with Faust's seek to committed offsets: a
        # partition nobody committed must start at its beginning (agents.faust_compat).
        seek_uncommitted_to_beginning(self.app.consumer, self.source.topics)
        # Faust waits for every taken message to be acked at a rebalance and
        # at a stop (when the sweep no longer runs): settle meanwhile (agents.faust_compat).
        settle_while_waiting_empty(self.app.consumer, self._settle_acked)
        self.hosts.keep(self._mine(assigned))
        if self.live_profiles is not None:
            self.live_profiles.assign(self._mine(assigned))

    async def _on_recovered(self) -> None:
        """After table recovery: build engines for newly assigned partitions.
        Faust resumes and seeks the stream partitions next; nothing is taken
        until that seek is done (agents.faust_compat)."""
        hold_flow_until_seek(self.app.consumer)
        self.hosts.keep(self._mine(self.app.consumer.assignment()), build=True)

    def _arm(self) -> Arm | None:
        """The running config experiment's candidate scenes (config.experiment)."""
        reloader = getattr(self, "_reloader", None)
        running = None if reloader is None else reloader.experiment
        return None if running is None else Arm(tuple(running.candidate.scene_list()),
                                                running.takes)

    def reconfigure(self, config: AppConfig) -> None:
        """Hot reload: every engine takes the new scenes, keeping user state."""
        self.config = config
        self.hosts.reconfigure(config)

    # -- the agent ------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        # Acks are ours (see Pending): a message is acked only when the state
        # it changed is written, after the triggers it caused are acknowledged.
        events_topic = self.settings.topics.events
        s = self.settings
        # Settle in batches: a user written by several events of a batch costs
        # one table write (and one changelog message).
        limits = SettleLimits(s.settle_batch, s.settle_ms, s.max_pending)
        ready = self.checkpoint.ready
        noack = self._stream = stream.noack()
        async for event in noack.events():
            if not self._outputs_declared:
                await self._declare_outputs()
            message = event.message
            host = self.host(message.partition)
            now = self._now_ms()
            try:
                tick = message.topic != events_topic  # a tick's batch settles at once
                if tick:
                    self._take_tick(host, now)
                else:
                    taken = self._take_record(host, message, now)
                    host.last_offset = message.offset
                if self.outbox.queued:  # sent as soon as decided
                    await self.outbox.send()
                host.pending.add(event, now, 1 if tick else taken)
                if tick or ready(host, now, limits):
                    await self._settle(host)
            except SEND_ERRORS as exc:
                self.checkpoint.stop_on_refused_send(host, exc)

    def _take_record(self, host: PartitionHost, message: Any, now: int) -> int:
        """Apply the events of one record (one event, or a batch: a JSON array)
        in order; a bad one is dead-lettered alone, with its index. Returns how
        many events the record held."""
        items = host.decode_record(message.value or b"", now)  # now: the future_ts bound
        batch = len(items) > 1 or (message.value or b"")[:1] == b"["
        base = position(message.offset, 0)
        accepted = duplicates = 0
        for index, item in enumerate(items):
            if type(item) is not Event:
                assert isinstance(item, EventRejected)
                self._dead_letter(message, item.reason, item.detail, now,
                                  index if batch else None)
                continue
            try:
                fired = host.on_event(item, base | index, now)
            except EventRejected as exc:  # an identity statement refused (a cycle, a known user)
                self._dead_letter(message, exc.reason, exc.detail, now, index if batch else None)
                if host.outbox:
                    self.outputs.forward(host)
                continue
            except SceneTriggerError as exc:  # unreadable stored state: park the event
                log.exception("state error", extra={"user_id": item.user_id})
                self._dead_letter(message, REASON_STATE_ERROR, str(exc), now,
                                  index if batch else None)
                continue
            if fired is None:
                duplicates += 1
                continue
            accepted += 1
            if fired:
                self._emit(host, fired, now, message.timestamp)
            self.outputs.audiences(host)
            if host.outbox:
                self.outputs.forward(host)
        if host.refused:
            self.outputs.decide(host, ())
        if accepted:
            self._accepted.inc(accepted)
        if duplicates:
            self._duplicate.inc(duplicates)
        return len(items)

    def _take_tick(self, host: PartitionHost, now: int) -> None:
        fired = host.on_tick(now)
        if fired:
            self._emit(host, fired, now, None)
        elif host.refused:
            self.outputs.decide(host, ())
        self.outputs.audiences(host)

    def _emit(self, host: PartitionHost, fired: list[Trigger], now_ms: int,
              event_time_s: float | None) -> None:
        self.outputs.emit(host, fired, now_ms, event_time_s)

    async def _settle(self, host: PartitionHost, _stream: Any = None) -> None:
        """The agent's settle: waits for the batch's acks (agents.checkpoint)."""
        await self.checkpoint.settle_when_acked(host, self.settings.max_pending)

    def _settle_quiet(self, now_ms: int, after_ms: int) -> None:
        """From the sweep: settle partitions whose batch has waited ``after_ms``
        (or any, during a rebalance) and whose sends are all acked, so a quiet
        partition commits and a rebalance never waits on us. Never awaits."""
        if self._stream is None:
            return
        limits = SettleLimits(None, 0 if is_rebalancing(self.app) else after_ms)
        self.checkpoint.settle_ready(list(self.hosts.values()), now_ms, limits)

    def _settle_acked(self) -> None:
        """Settle every partition whose triggers are acked, quiet or not."""
        self._settle_quiet(self._now_ms(), 0)

    def _dead_letter(self, message: Any, reason: str, detail: str, now_ms: int,
                     index: int | None = None) -> None:
        self.outputs.dead_letter(message, reason, detail, now_ms, index)

    async def _declare_outputs(self) -> None:
        for topic in (self.triggers_topic, self.dead_letter_topic, self.decisions_topic):
            await topic.maybe_declare()
        if self.config.audiences:
            await self.audiences_topic.maybe_declare()
        # A settle writes a batch of states at once; past 100 in its producer buffer
        # Faust stops the stream, draining one message at a time: let a batch wait.
        allow_producer_buffer(self.app, max(2 * self.settings.max_pending, 100))
        self._outputs_declared = True

    # -- timers ---------------------------------------------------------------

    async def _sweep(self) -> None:
        now = self._now_ms()
        self._settle_quiet(now, max(self.settings.sweep_interval_ms // 2, 50))
        for tick in due_ticks(self.hosts, now):
            self.ticks_topic.send_soon(key=b"tick", value=tick.encode(),
                                       partition=tick.partition)
            self.metrics.ticks.inc()

    async def _refresh_gauges(self) -> None:
        await self.metrics.refresh(self.hosts, self.app.consumer, self.settings.topics.events)

    async def _poll_config(self) -> None:
        """Follow the config source; a refusal is counted by the reloader."""
        if self._reloader.store is not None:
            await self._reloader.follow()
        else:
            self._reloader.poll()


def create_app(settings: WorkerSettings, *, metrics: WorkerMetrics | None = None,
               on_trigger: TriggerHook | None = None) -> Any:
    """A new Faust app for these settings (see :class:`SceneWorker`)."""
    return SceneWorker(settings, metrics=metrics, on_trigger=on_trigger).app
