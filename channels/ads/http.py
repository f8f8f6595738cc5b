"""What every platform client shares: one HTTP call as an
:class:`~channels.transports.retry.Attempt` (status classes, ``Retry-After``
and exceptions as the webhook channel reads them), the parsed JSON answer,
and a token bucket per platform."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson

from channels.transports.retry import Attempt
from channels.transports.webhook import classify_status, exception_attempt, pooled_session

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class RateLimiter:
    """``per_second`` requests, bursts of ``burst``; the clock and the sleep
    are parameters so unit tests need no waiting."""

    per_second: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    sleep: Sleep = asyncio.sleep
    _tokens: float = field(default=-1.0, init=False)
    _last: float = field(default=0.0, init=False)
    waited_s: float = field(default=0.0, init=False)  # for status: time spent throttled

    async def acquire(self) -> None:
        while True:
            now = self.clock()
            if self._tokens < 0:
                self._tokens, self._last = float(self.burst), now
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            wait = (1 - self._tokens) / self.per_second
            self.waited_s += wait
            await self.sleep(wait)


@dataclass(slots=True)
class Http:
    """A pooled aiohttp session made on first use, inside the running loop."""

    timeout_ms: int = 10_000
    max_connections: int = 8
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def call(self, method: str, url: str, *, headers: Mapping[str, str],
                   body: bytes | None = None, form: Mapping[str, str] | None = None,
                   ) -> tuple[Attempt, Any]:
        """One request: its attempt and its JSON answer (None when not JSON)."""
        self._session = pooled_session(self._session, self.max_connections, self.timeout_ms)
        try:
            async with self._session.request(method, url, headers=dict(headers),
                                             data=body if form is None else dict(form)) as resp:
                raw = await resp.read()
                attempt = classify_status(resp.status, resp.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return exception_attempt(exc, self.timeout_ms), None
        try:
            answer = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            answer = None
        return attempt, answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def with_error(attempt: Attempt, detail: str | None, *, retryable: bool | None = None) -> Attempt:
    """``attempt`` failed, with the platform's own words (no identifiers:
    the platforms answer with codes, counts and messages)."""
    error = f"{attempt.error or 'error'}: {detail}" if detail else attempt.error
    return replace(attempt, ok=False, error=error,
                   retryable=attempt.retryable if retryable is None else retryable)


def json_body(value: Any) -> bytes:
    return orjson.dumps(value)
