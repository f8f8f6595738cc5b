"""Group concurrent calls into batches: one round trip for many deliveries.

A batch leaves when it holds ``max_items`` or ``linger_ms`` after its first
item, whichever comes first; ``flush`` returns one result per item, in
order. Used by the webhook (one POST) and the inbox (one Redis pipeline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Batcher(Generic[T, R]):
    flush: Callable[[list[T]], Awaitable[list[R]]]
    max_items: int
    linger_ms: int
    failed: Callable[[T, BaseException], R]  # the result for an item whose flush raised
    _waiting: list[tuple[T, asyncio.Future[R]]] = field(default_factory=list, init=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if len(self._waiting) >= self.max_items:
            self.flush_now()
        elif self._timer is None:
            self._timer = loop.call_later(self.linger_ms / 1000, self.flush_now)
        return await future

    def flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self.flush(items)
        except Exception as exc:  # every waiting caller must get an answer
            results = [self.failed(item, exc) for item in items]
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # the caller may have been cancelled
                future.set_result(result)

    async def close(self) -> None:
        """Send what waits and wait for batches in flight."""
        self.flush_now()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
