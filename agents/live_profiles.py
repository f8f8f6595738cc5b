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

The records go through an :class:`agents.checkpoint.Outbox` of their own,
straight to the producer (not behind the changelog writes in Faust's buffer),
sent by one task at a time (so a user's records leave in the order they were
decided) and never awaited by the settle: the agent does not wait for them.
A refused send is counted (``scenetrigger_worker_profile_send_failures``)
and logged; the user's next settle sends their profile again. After a crash
the profiles of the last settles may be missing until the user's next event:
the store shows a slightly older profile, never a wrong user's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from agents.checkpoint import Outbox
from agents.engine_host import PartitionHost
from channels.audience.live_profile import encode_live_profile

if TYPE_CHECKING:
    from agents.app import SceneWorker

log = logging.getLogger(__name__)


class _Acks:
    """Stands where the Outbox puts send futures: counts the refused ones
    instead of keeping them (nothing waits for these acks)."""

    __slots__ = ("_failed",)

    def __init__(self, failed: Counter) -> None:
        self._failed = failed

    def append(self, future: Any) -> None:
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
                 declare: Callable[[], Any] | None = None) -> None:
        self.topic = topic
        self.outbox = Outbox(producer)
        self._now_ms = now_ms
        self._declare = declare  # the topic's maybe_declare, once before the first send
        self.records = Counter("scenetrigger_worker_profiles",
                               "Live profile records sent (PREFIX.profiles), by op",
                               ["op"], registry=registry)
        self._puts = self.records.labels("put")
        self._tombstones = self.records.labels("tombstone")
        self.failures = Counter("scenetrigger_worker_profile_send_failures",
                                "Live profile records Kafka refused (the user's next "
                                "settle sends the profile again)", registry=registry)
        self._acks = _Acks(self.failures)
        self._task: asyncio.Task[None] | None = None

    def on_settle(self, host: PartitionHost) -> None:
        """Queue the batch's changed profiles and erased users (before the
        store's flush forgets which they were); a task sends them. Never awaits."""
        store = host.store
        changed, erased = store.staged_users()
        if not changed and not erased:
            return
        now = self._now_ms()
        add, topic, acks, get = self.outbox.add, self.topic, self._acks, store.get
        puts = 0
        for user_id in changed:
            state = get(user_id)
            if state is not None:
                add(acks, topic, user_id.encode(), encode_live_profile(state.profile, now))
                puts += 1
        for user_id in erased:
            add(acks, topic, user_id.encode(), None)
        if puts:
            self._puts.inc(puts)
        if erased:
            self._tombstones.inc(len(erased))
        task = self._task
        if task is None or task.done():
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
            while self.outbox.queued:
                await self.outbox.send()
        except Exception as exc:  # the producer refused at once (stopping, closed)
            self.failures.inc()
            log.warning("live profile records not sent", extra={"error": repr(exc)})

    async def flush(self) -> None:
        """Wait until what is queued has been handed to the producer (tests)."""
        while self._task is not None and not self._task.done():
            await self._task


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
