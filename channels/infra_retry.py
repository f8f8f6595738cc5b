"""Infrastructure faults, and the one way a long-running process waits them out.

A Redis that refuses writes (out of memory under ``noeviction``, a read-only
replica after a failover, a cluster slot that moved or a cluster that is
down, a server still loading its AOF) or cannot be reached is the
infrastructure's fault, not the record's. A process that consumes a topic
into Redis (``deliver``, ``journeys``) then waits with back-off and does the
same work again: it never exits on such a fault and commits nothing it has
not done (docs/guarantees.md, "wait, never skip"). ``serve`` answers the
request 503 with ``Retry-After`` instead.

:class:`Waiter` is that wait, for any caller (``await waiter.run(op, what)``
or :meth:`Waiter.until_done` for a step with its own retry set). Every fault
is counted in ``scenetrigger_infra_errors_total{component, fault}`` and the
operations waiting right now in ``scenetrigger_infra_waiting{component}``
(alert ``ScenetriggerRedisRefusing``, docs/runbook.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("scenetrigger.infra")
T = TypeVar("T")

# Redis refused the command as a whole and did not run it: the server's
# state, never the record's, so retrying the same command is always safe and
# waiting has no limit (MovedError is an AskError).
REDIS_REFUSALS: tuple[type[Exception], ...] = (
    OutOfMemoryError, ReadOnlyError, BusyLoadingError, ClusterDownError, TryAgainError, AskError)

_FAULTS: tuple[tuple[type[BaseException], str], ...] = (
    (OutOfMemoryError, "oom"), (ReadOnlyError, "readonly"), (BusyLoadingError, "loading"),
    (ClusterDownError, "cluster"), (TryAgainError, "cluster"), (AskError, "cluster"),
    (RedisTimeoutError, "timeout"), (TimeoutError, "timeout"),
    (RedisConnectionError, "connection"), (ConnectionError, "connection"),
)


FAULT_NAMES = (*dict.fromkeys(name for _, name in _FAULTS), "other")


def fault_kind(exc: BaseException) -> str:
    """The metric's ``fault`` label: oom, readonly, loading, cluster, timeout,
    connection, or other."""
    return next((name for kind, name in _FAULTS if isinstance(exc, kind)), "other")


def is_refusal(exc: BaseException) -> bool:
    """Redis refused the whole command (see :data:`REDIS_REFUSALS`)."""
    return isinstance(exc, REDIS_REFUSALS)


@dataclass(frozen=True, slots=True)
class InfraMetrics:
    errors: Counter  # component, fault
    waiting: Gauge  # component

    @classmethod
    def on(cls, registry: CollectorRegistry) -> InfraMetrics:
        """The metrics on ``registry``, created once however many callers ask."""
        known = _BY_REGISTRY.get(id(registry))
        if known is not None and known[0] is registry:
            return known[1]
        metrics = cls(
            Counter("scenetrigger_infra_errors", "Infrastructure faults (Redis refusing or "
                    "unreachable) a process waited out, by component and fault",
                    ["component", "fault"], registry=registry),
            Gauge("scenetrigger_infra_waiting", "Operations waiting for the infrastructure "
                  "right now, by component", ["component"], registry=registry),
        )
        _BY_REGISTRY[id(registry)] = (registry, metrics)
        return metrics

    def prepare(self, component: str) -> None:
        """Every series of ``component`` at 0 from the start: rate() and the
        alerts see it before the first fault."""
        self.waiting.labels(component)
        for fault in FAULT_NAMES:
            self.errors.labels(component, fault)


_BY_REGISTRY: dict[int, tuple[CollectorRegistry, InfraMetrics]] = {}


class Waiter:
    """Retries an operation on infrastructure faults, backing off from
    ``base_s`` doubling to ``max_s`` (no jitter: one process waits on one
    Redis; a floor keeps a refusing server from being hammered). ``stopping``
    set: the wait ends at once and :meth:`until_done` returns False."""

    def __init__(self, component: str, metrics: InfraMetrics | None = None, *,
                 base_s: float = 0.5, max_s: float = 10.0,
                 stopping: asyncio.Event | None = None) -> None:
        self.component = component
        self.metrics = metrics
        self.base_s = base_s
        self.max_s = max(max_s, base_s)
        self.stopping = stopping
        self.faults = 0
        if metrics is not None:
            metrics.prepare(component)

    def count(self, exc: BaseException) -> None:
        self.faults += 1
        if self.metrics is not None:
            self.metrics.errors.labels(self.component, fault_kind(exc)).inc()

    async def until_done(self, attempt: Callable[[], Awaitable[None]],
                         retry_on: tuple[type[BaseException], ...], what: str,
                         extra: Mapping[str, Any] | None = None) -> bool:
        """Run ``attempt`` until it returns (True), retrying after each
        ``retry_on`` error; False when stopped first."""
        backoff = self.base_s
        waiting = False
        try:
            while True:
                try:
                    await attempt()
                    return True
                except retry_on as exc:
                    self.count(exc)
                    log.warning(what, extra={**(extra or {}), "component": self.component,
                                             "fault": fault_kind(exc), "error": repr(exc),
                                             "retry_in_s": backoff})
                if not waiting and self.metrics is not None:
                    waiting = True
                    self.metrics.waiting.labels(self.component).inc()
                if await self._stopped_within(backoff):
                    return False
                backoff = min(backoff * 2, self.max_s)
        finally:
            if waiting and self.metrics is not None:
                self.metrics.waiting.labels(self.component).dec()

    async def run(self, op: Callable[[], Awaitable[T]], what: str,
                  retry_on: tuple[type[BaseException], ...] | None = None) -> T:
        """``op()``'s result, waiting out infrastructure faults (``retry_on``,
        default: Redis refusals and connection/timeout errors). Stopped
        first: raises :class:`asyncio.CancelledError`."""
        box: list[T] = []

        async def attempt() -> None:
            box.append(await op())

        if not await self.until_done(attempt, retry_on or WAIT_ON, what):
            raise asyncio.CancelledError(f"stopped while waiting: {what}")
        return box[0]

    async def _stopped_within(self, seconds: float) -> bool:
        if self.stopping is None:
            await asyncio.sleep(seconds)
            return False
        with contextlib.suppress(TimeoutError):  # a stop ends the wait at once
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()



# How long a stopping process waits for one background task before it goes on
# without it: a SIGTERM must end the process well before a supervisor's kill.
STOP_WAIT_S = 5.0


async def stop_task(task: asyncio.Future[Any], what: str, within_s: float | None = None, *,
                    cancel: bool = True) -> bool:
    """Wait for ``task`` at most ``within_s`` (cancelled first, unless
    ``cancel`` is False: a closing that should finish); False, with a
    warning, when it is abandoned: a library that swallows the cancellation
    or a wait that ignores it must not keep the process from exiting."""
    within_s = STOP_WAIT_S if within_s is None else within_s
    if cancel:
        task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within_s)
    if not done:
        task.cancel()
        log.warning("stopping without a task that did not end in time", extra={
            "task": what, "waited_s": within_s})
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("a task failed while stopping", extra={
            "task": what, "error": repr(task.exception())})
    return True


# Redis faults an HTTP request answers 503 to (not every ConnectionError: a
# client that hangs up is not the infrastructure's fault).
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    *REDIS_REFUSALS, RedisConnectionError, RedisTimeoutError)
RETRY_AFTER_S = 5


def unavailable_middleware(metrics: InfraMetrics | None, component: str = "serve") -> Any:
    """An aiohttp middleware: a request whose Redis refuses or is away gets
    503 with ``Retry-After`` (nothing it asked for was done, so the client
    retries it), counted like any wait; the server stays up."""

    if metrics is not None:
        metrics.prepare(component)

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except REDIS_UNAVAILABLE as exc:
            if metrics is not None:
                metrics.errors.labels(component, fault_kind(exc)).inc()
            log.warning("request refused: Redis unavailable", extra={
                "component": component, "path": request.path, "fault": fault_kind(exc),
                "error": repr(exc)})
            return web.json_response(
                {"error": "storage unavailable, retry later", "fault": fault_kind(exc)},
                status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        return response

    return middleware


# What a Waiter waits out by default: every Redis refusal, and a Redis or
# socket that cannot be reached.
WAIT_ON: tuple[type[BaseException], ...] = (
    *REDIS_REFUSALS, RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
