"""Retry with exponential backoff and full jitter, shared by every channel.

A channel describes one attempt as an :class:`Attempt`; :func:`run_attempts`
repeats retryable attempts up to ``max_attempts`` and turns the last one into
a :class:`~channels.base.DeliveryResult`. Sleep and randomness are parameters
so unit tests run without waiting.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.base import DeliveryResult, Message
from config.channel_models import RetryModel

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` counts the first try. The n-th retry waits a uniform
    random time in ``[0, min(max_backoff_ms, base_backoff_ms * 2**(n-1))]``
    (AWS "full jitter"). A server's ``Retry-After`` is honoured up to
    ``retry_after_max_ms``; a longer one ends the attempts (still retryable,
    so the dead-letter and ``redrive`` can try later)."""

    max_attempts: int = 3
    base_backoff_ms: int = 100
    max_backoff_ms: int = 5_000
    retry_after_max_ms: int = 30_000

    def backoff_ms(self, retry_number: int, rng: random.Random) -> int:
        ceiling = min(self.max_backoff_ms, self.base_backoff_ms * (1 << min(retry_number - 1, 30)))
        return int(rng.uniform(0, ceiling))  # jitter, not cryptography

    @classmethod
    def of(cls, model: RetryModel) -> RetryPolicy:
        """The policy a channel's ``retry:`` config section describes."""
        return cls(model.max_attempts, model.base_backoff, model.max_backoff,
                   model.retry_after_max)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one try. ``retry_after_ms`` is a server's explicit wait."""

    ok: bool
    error: str | None = None
    retryable: bool = False
    status: int | None = None
    retry_after_ms: int | None = None


async def run_attempts(
    message: Message,
    channel: str,
    attempt: Callable[[], Awaitable[Attempt]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> DeliveryResult:
    """Call ``attempt`` until it succeeds, fails for good, or attempts run out.
    Pass a long-lived ``rng``: seeding a new one per call costs ~50 µs."""
    tries = 0
    while True:
        tries += 1
        outcome = await attempt()
        last = tries >= policy.max_attempts
        if outcome.ok or not outcome.retryable or last:
            return _result(message, channel, outcome, tries)
        if outcome.retry_after_ms is not None:
            if outcome.retry_after_ms > policy.retry_after_max_ms:
                note = f"{outcome.error}; Retry-After {outcome.retry_after_ms} ms exceeds the bound"
                return DeliveryResult(False, channel, message.message_id, tries, note, True,
                                      outcome.status)
            delay_ms = outcome.retry_after_ms
        else:
            jitter = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
            delay_ms = policy.backoff_ms(tries, jitter)
        if delay_ms > 0:
            await sleep(delay_ms / 1000)


def _result(message: Message, channel: str, outcome: Attempt, tries: int) -> DeliveryResult:
    return DeliveryResult(
        ok=outcome.ok,
        channel=channel,
        message_id=message.message_id,
        attempts=tries,
        error=None if outcome.ok else outcome.error,
        retryable=False if outcome.ok else outcome.retryable,
        status=outcome.status,
    )
