"""The worker's side of the live profile store: each changed user's latest
profile on the compacted topic ``PREFIX.profiles``, for on-site slots.

At a partition's settle (:class:`agents.checkpoint.Checkpoint`, just before
its staged states are written) every user whose state the batch changed gets
one record: key the user id, value
:func:`channels.audience.live_profile.encode_live_profile` of their profile
at the worker's wall clock (the store keeps the newer one). So a user with
fifty events in a batch costs one record, and a user the batch did not touch
none. An erased user (an ``erase`` event) and an identified anonymous id
(its state moved to the known user) get a tombstone instead. Every event but
the system's own feedback (``delivered``, ``failed``) moves the profile; a
state changed by a timer alone publishes the same profile again, which the
store takes as a no-op.

The records go straight to the producer (not behind the changelog writes in
Faust's buffer), sent by one task at a time (so a user's records leave in the
order they were decided) and never awaited by the settle: the agent does not
wait for them. A refused profile is counted
(``scenetrigger_worker_profile_send_failures``) and logged; the user's next
settle sends their profile again. A refused tombstone is sent again until
Kafka takes it, behind whatever is queued by then (so after any profile of
the user already queued): left out, the erased user's profile would stay the
last record of their key and ``scenetrigger profiles`` would write it back.

A partition that leaves the worker (a rebalance) takes its queued profiles
with it: a late profile from the old owner could land after the new owner's
tombstone. They are dropped (``scenetrigger_worker_profiles_dropped``), and so
are the profiles of its settles until it is assigned again; its tombstones
still go. Records already handed to the producer cannot be called back, and
a crash loses what was queued: the guarantee that an erased user's profile
never comes back is the consumer's, which writes no profile of a user with
an erasure receipt (:mod:`channels.audience.live_profile_feed`); these rules
narrow the window for erasures without a receipt (an erase event sent
directly, the anonymous ids the worker erases with their known user).
After a crash the profiles of the last settles may be missing until the
user's next event: the store shows a slightly older profile, never a wrong
user's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from agents.engine_host import PartitionHost
from channels.audience.live_profile import encode_live_profile

if TYPE_CHECKING:
    from agents.app import SceneWorker

log = logging.getLogger(__name__)


RETRY_S = 1.0  # before a refused tombstone is sent again

# (partition, key, value); value None: a tombstone
Record = tuple[int, bytes, bytes | None]


class _Acks:
    """Takes the send futures of profiles: counts the refused ones (nothing
    waits for these acks)."""

    __slots__ = ("_failed",)

    def __init__(self, failed: Counter) -> None:
        self._failed = failed

    def watch(self, future: Any) -> None:
        future.add_done_callback(self._done)

    def _done(self, future: Any) -> None:
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            self._failed.inc()
            log.warning("live profile record not sent", extra={"error": repr(error)})


class LiveProfiles:
    """Publishes each settle's changed profiles on ``topic`` (see the module doc)."""

    def __init__(self, topic: str, producer: Callable[[], Any], now_ms: Callable[[], int],
                 registry: CollectorRegistry,
                 declare: Callable[[], Any] | None = None, retry_s: float = RETRY_S) -> None:
        self.topic = topic
        self._producer = producer  # Faust's producer: send() hands to aiokafka
        self.queued: deque[Record] = deque()
        self._now_ms = now_ms
        self._declare = declare  # the topic's maybe_declare, once before the first send
        self._retry_s = retry_s
        self.records = Counter("scenetrigger_worker_profiles",
                               "Live profile records sent (PREFIX.profiles), by op",
                               ["op"], registry=registry)
        self._puts = self.records.labels("put")
        self._tombstones = self.records.labels("tombstone")
        self.failures = Counter("scenetrigger_worker_profile_send_failures",
                                "Live profile records Kafka refused (the user's next "
                                "settle sends the profile again; a tombstone is sent "
                                "again until taken)", registry=registry)
        self.dropped = Counter("scenetrigger_worker_profiles_dropped",
                               "Live profiles not sent: their partition left this worker "
                               "(its new owner's records are the ones that count)",
                               registry=registry)
        self._acks = _Acks(self.failures)
        self._revoked: set[int] = set()  # partitions gone since their last assignment
        self._unacked = 0  # tombstones handed to the producer, not yet acked
        self._task: asyncio.Task[None] | None = None

    def on_settle(self, host: PartitionHost) -> None:
        """Queue the batch's changed profiles and erased users (before the
        store's flush forgets which they were); a task sends them. Never awaits."""
        store = host.store
        changed, erased = store.staged_users()
        if not changed and not erased:
            return
        now = self._now_ms()
        partition, add, get = host.partition, self.queued.append, store.get
        puts = 0
        if partition in self._revoked:  # a settle while the partition leaves
            self.dropped.inc(len(changed))
        else:
            for user_id in changed:
                state = get(user_id)
                if state is not None:
                    add((partition, user_id.encode(), encode_live_profile(state.profile, now)))
                    puts += 1
        for user_id in erased:
            add((partition, user_id.encode(), None))
        if puts:
            self._puts.inc(puts)
        if erased:
            self._tombstones.inc(len(erased))
        self._kick()

    def revoke(self, partitions: Collection[int]) -> None:
        """A rebalance takes ``partitions``: their queued profiles are dropped
        (and their settles' until they are assigned again); tombstones stay."""
        self._revoked.update(partitions)
        kept = deque(r for r in self.queued if r[2] is None or r[0] not in self._revoked)
        if len(kept) < len(self.queued):
            self.dropped.inc(len(self.queued) - len(kept))
            self.queued = kept

    def assign(self, partitions: Collection[int]) -> None:
        self._revoked.difference_update(partitions)

    def _kick(self) -> None:
        """Start the sending task unless one runs."""
        task = self._task
        if self.queued and (task is None or task.done()):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (never in the worker): the next settle sends them
                return
            self._task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        """Send until nothing is queued (one task at a time: in order)."""
        try:
            if self._declare is not None:
                await self._declare()
                self._declare = None
            send = self._producer().send
            while self.queued:
                record = self.queued.popleft()
                try:
                    future = await send(self.topic, record[1], record[2], None, None, None)
                except BaseException:
                    self._again(record)
                    raise
                if record[2] is None:
                    self._unacked += 1
                    future.add_done_callback(functools.partial(self._tombstone_done, record))
                else:
                    self._acks.watch(future)
        except Exception as exc:  # the producer refused at once (stopping, closed)
            self.failures.inc()
            log.warning("live profile records not sent", extra={"error": repr(exc)})
            self._retry_later()

    def _again(self, record: Record) -> None:
        """A record the producer refused at once: a tombstone waits for the next try."""
        if record[2] is None:
            self.queued.append(record)

    def _tombstone_done(self, record: Record, future: Any) -> None:
        self._unacked -= 1
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            self.failures.inc()
            log.warning("live profile tombstone not sent: sending it again",
                        extra={"error": repr(error)})
            self.queued.append(record)  # behind what is queued: after the user's profiles
            self._retry_later()

    def _retry_later(self) -> None:
        if any(r[2] is None for r in self.queued):
            asyncio.get_running_loop().call_later(self._retry_s, self._kick)

    async def flush(self) -> None:
        """Wait until what is queued has been handed to the producer and every
        tombstone acked (tests)."""
        while self.queued or self._unacked or (self._task is not None
                                                and not self._task.done()):
            if self._task is not None and not self._task.done():
                await self._task
            else:
                await asyncio.sleep(0.01)


def publish_live_profiles(worker: SceneWorker) -> LiveProfiles | None:
    """Hook the worker's settles up to ``PREFIX.profiles`` (None when the
    worker runs with ``--no-live-profiles``)."""
    settings = worker.settings
    if not settings.live_profiles:
        return None
    topic = worker._topic(settings.topics.profiles, compacting=True)
    feed = LiveProfiles(settings.topics.profiles, lambda: worker.app.producer,
                        worker._now_ms, worker.metrics.registry, topic.maybe_declare)
    worker.checkpoint.on_settle = feed.on_settle
    return feed
