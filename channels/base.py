"""The channel contract: one message to one person, delivered by one channel.

Every channel (webhook, Redis inbox, email, provider adapters) implements
:class:`Channel`; unit tests use fakes behind the same interface.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from channels.infra_retry import REDIS_REFUSALS

# Faults of the infrastructure, not of the message: worth trying the same
# message again. Not every OSError: a time zone "America" made ZoneInfo raise
# IsADirectoryError, and retrying that message forever stopped all delivery.
# A Redis refusing writes (out of memory, read-only, cluster) is one too: it
# ended `deliver` when a dead letter could not be written (issue 19).
INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, socket.gaierror,
    *REDIS_REFUSALS)


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered, personalised message ready for a channel.

    ``message_id`` is deterministic (trigger id + channel + step), so a retried
    or replayed trigger maps to the same id and is delivered at most once.
    """

    message_id: str
    trigger_id: str
    user_id: str
    scene: str
    channel: str
    subject: str
    text: str
    html: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    ok: bool
    channel: str
    message_id: str
    attempts: int = 1
    error: str | None = None
    retryable: bool = False
    status: int | None = None


class Channel(Protocol):
    """A delivery channel. ``send`` never raises for delivery failures: it
    returns a result saying what happened (and whether a retry may help)."""

    name: str

    async def send(self, message: Message) -> DeliveryResult: ...

    async def close(self) -> None: ...
