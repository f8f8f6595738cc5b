"""When and how a partition's taken work becomes durable: the settle.

A partition's batch (:class:`agents.engine_host.Pending`) settles in one way
only (:meth:`Checkpoint.settle`): its staged states are written (table and
changelog), its messages acked (their offsets may then commit) and the
trigger hook runs. Before that every send of the batch (triggers, decision
records, forwarded events) must be acknowledged, so neither a state nor a
committed offset gets ahead of the triggers it implies.

A settle's changelog writes are not waited for: the agent keeps taking and
sending. What a crash could leave undone per partition is bounded instead:
the events of its settles whose changelog writes are not yet known
acknowledged plus its unsettled batch (:meth:`Checkpoint.in_doubt`). When
that reaches ``wait_events`` (the worker's ``max_pending``) the agent waits
for those writes (:meth:`Checkpoint.fence`) and the batch's acks, then
settles. So a worker killed at any point leaves, per partition, at most
``max_pending`` events (plus the rest of the record that crossed it) undone;
its successor redoes them from the committed offset (the offset guard skips
every event a written state holds) and sends their triggers again: at most
that many events' duplicate trigger records per partition, none lost
(docs/guarantees.md). Faust's commit flushes the producer first, so a
committed offset never gets ahead of a changelog write.

Two callers decide *when*, both through :meth:`Checkpoint.ready`, which only
looks: the agent after each message (:data:`SettleLimits` from the worker's
settings; at ``max_pending`` it waits for the acks) and the sweep, for
quiet partitions and while Faust waits for the streams (it never waits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from agents.engine_host import PartitionHost
from agents.faust_compat import ack_now, current_event, on_changelog_send
from agents.outputs import Outbox  # its former home: `from agents.checkpoint import Outbox`
from triggers.events import Trigger

log = logging.getLogger(__name__)

__all__ = ["EXIT_TRIGGER_SEND_FAILED", "FENCE_TIMEOUT_S", "SEND_ERRORS", "Checkpoint",
           "Outbox", "SettleLimits", "TriggerHook"]

# Called once per trigger after Kafka acknowledged it: (trigger, fired_at_ms).
TriggerHook = Callable[[Trigger, int], Awaitable[None]]

# EX_TEMPFAIL: the worker stopped because Kafka refused a trigger; restart it.
EXIT_TRIGGER_SEND_FAILED = 75
# What a refused send raises: aiokafka's errors, or Faust's wrapper of them.
SEND_ERRORS = (KafkaError, ProducerSendError)
# The fence never holds a partition longer: past it (a producer stuck behind a
# dead broker) more than one batch may be redone after a crash, none lost.
FENCE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class SettleLimits:
    """A batch settles once its sends are acked and it holds ``events`` events
    (None: any number) or its first message waited ``age_ms``; at
    ``wait_events`` (None: never) it settles anyway, the caller waiting for
    the acks."""

    events: int | None
    age_ms: int
    wait_events: int | None = None


class Checkpoint:
    """The worker's settle: one per worker, for every partition it hosts."""

    def __init__(self, stream: Callable[[], Any], loop: Callable[[], asyncio.AbstractEventLoop],
                 on_trigger: TriggerHook | None, now_ms: Callable[[], int],
                 fatal: Callable[[int], None]) -> None:
        self._stream = stream  # the agent's noack stream, once it runs
        self._loop = loop
        self.on_trigger = on_trigger
        self._now_ms = now_ms
        self._fatal = fatal
        self._hooks: set[asyncio.Task[None]] = set()  # running hooks, referenced until done
        self._written: list[Any] = []  # the changelog sends of the settle under way
        # partition -> changelog sends of its settles, not yet known acked,
        # and how many events those settles took (agents.checkpoint: the bound)
        self.unfenced: dict[int, list[Any]] = {}
        self._doubt: dict[int, int] = {}
        # Called at each settle before the staged states are written (what
        # they are is known until then): agents.live_profiles.
        self.on_settle: Callable[[PartitionHost], None] | None = None

    def watch(self, table: Any) -> None:
        """Follow the table's changelog sends (the fence waits for them)."""
        on_changelog_send(table, self._written.append)

    def in_doubt(self, host: PartitionHost) -> int:
        """Events of the partition a crash now could make a successor redo:
        its unsettled batch and its settles not yet known durable."""
        doubt = host.pending.events
        if self.unfenced.get(host.partition):
            doubt += self._doubt.get(host.partition, 0)
        return doubt

    def ready(self, host: PartitionHost, now_ms: int, limits: SettleLimits) -> bool:
        """Whether the partition's batch settles now. Looks only: a refused
        send counts as acked here, :meth:`settle` raises it."""
        pending = host.pending
        since = pending.since_ms
        if since is None or host.revoked:
            return False
        size = pending.events
        if limits.wait_events is not None and self.in_doubt(host) >= limits.wait_events:
            return True
        if (limits.events is None or size < limits.events) and now_ms - since < limits.age_ms:
            return False
        # Newest sends first: the unacked ones are at the end.
        return all(future.done() for future in reversed(pending.futures))

    async def settle_when_acked(self, host: PartitionHost, wait_events: int | None) -> None:
        """From the agent: settle the batch, hook included. At ``wait_events``
        events in doubt it first waits for the earlier settles' changelog
        writes (:meth:`fence`), and for the batch's acks in any case."""
        pending = host.pending
        if wait_events is not None and self.in_doubt(host) >= wait_events:
            await self.fence(host)
        if pending.futures and not all(future.done() for future in pending.futures):
            await asyncio.wait(list(pending.futures))
        hook = self.settle(host)
        if hook is not None:
            await hook

    async def fence(self, host: PartitionHost) -> None:
        """Wait until the changelog writes of the partition's settles are
        acknowledged (a failed one too: the batch is then redone, never lost)."""
        writes = self.unfenced.pop(host.partition, None)
        self._doubt.pop(host.partition, None)
        if writes and not all(write.done() for write in writes):
            _, late = await asyncio.wait(writes, timeout=FENCE_TIMEOUT_S)
            if late:
                log.warning("changelog writes not acknowledged: going on", extra={
                    "partition": host.partition, "writes": len(late),
                    "seconds": FENCE_TIMEOUT_S})

    def settle(self, host: PartitionHost) -> asyncio.Task[None] | None:
        """Write the batch's staged states, ack its messages and start the
        trigger hook (the task, kept until done, is returned). Raises a
        refused send (:meth:`Pending.acked`); a revoked partition writes
        nothing. Never awaits, so it cannot interleave with another settle."""
        pending = host.pending
        if not pending.acked() or host.revoked or not pending.messages:
            return None
        if self.on_settle is not None:
            self.on_settle(host)
        # Table writes take the changelog partition from the current event:
        # the batch's own last message is made current for this call.
        with current_event(pending.messages[-1]):
            host.store.flush()
        partition = host.partition
        earlier = self.unfenced.get(partition)
        if earlier and earlier[-1].done() and all(write.done() for write in earlier):
            del self.unfenced[partition]  # durable: out of doubt
            self._doubt.pop(partition, None)
        if self._written:
            self.unfenced.setdefault(partition, []).extend(self._written)
            self._written.clear()
            self._doubt[partition] = self._doubt.get(partition, 0) + pending.events
        messages, triggers = pending.take()
        stream = self._stream()
        for event in messages:
            ack_now(stream, event)
        if not triggers or self.on_trigger is None:
            return None
        task = self._loop().create_task(self._run_hook(triggers))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)
        return task

    def settle_ready(self, hosts: list[PartitionHost], now_ms: int,
                     limits: SettleLimits) -> None:
        """From the sweep: settle every ready partition; a refused send stops
        the worker (:meth:`stop_on_refused_send`)."""
        for host in hosts:
            if not self.ready(host, now_ms, limits):
                continue
            try:
                self.settle(host)
            except SEND_ERRORS as exc:
                self.stop_on_refused_send(host, exc)

    async def _run_hook(self, triggers: list[Trigger]) -> None:
        assert self.on_trigger is not None
        for trig in triggers:
            try:
                await self.on_trigger(trig, self._now_ms())
            except Exception:  # a hook must never stop the stream
                log.exception("trigger hook failed", extra={"trigger_id": trig.trigger_id})

    def stop_on_refused_send(self, host: PartitionHost, exc: BaseException) -> None:
        """Kafka refused a trigger (after the producer's own retries). Nothing
        of the batch may become durable: its states would record a trigger
        nobody received, and a commit would skip its events. Stop at once,
        committing nothing more; a restarted worker (or the group's next
        owner of the partition) redoes the batch from the committed offset.
        Faust's own stop would wait forever for the batch's acks."""
        log.critical("trigger send failed: stopping without committing; the batch is "
                     "redone from the committed offset on restart",
                     extra={"partition": host.partition, "error": repr(exc),
                            "exit_code": EXIT_TRIGGER_SEND_FAILED})
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        self._fatal(EXIT_TRIGGER_SEND_FAILED)
