"""The channel contract: one message to one person, delivered by one channel.

Every channel (webhook, Redis inbox, email, provider adapters) implements
:class:`Channel`; unit tests use fakes behind the same interface.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from channels.errors import ChannelError
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


class MissingSecret(ChannelError):
    """A channel's secret is not in the environment (``field``: the config
    field that names the variable ``var``)."""

    def __init__(self, field_name: str, var: str, why: str = "not set") -> None:
        super().__init__(var)
        self.field = field_name
        self.var = var
        self.why = why


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a channel is built with besides its config: the environment its
    secrets come from, and a Redis client to share (inbox channels; None:
    each opens its own)."""

    env: Mapping[str, str]
    redis: Any = None

    def secret(self, field_name: str, var: str | None) -> str | None:
        """The value of the variable ``var`` names (None when ``var`` is None);
        raises :class:`MissingSecret` when it is unset, empty or not one line."""
        if var is None:
            return None
        if var not in self.env:
            raise MissingSecret(field_name, var)
        if not self.env[var]:  # an empty signing key or password is a mistake, not a choice
            raise MissingSecret(field_name, var, "empty")
        if "\r" in self.env[var] or "\n" in self.env[var]:
            raise MissingSecret(field_name, var, "not one line")
        return self.env[var]


def no_fields(contact: Any) -> dict[str, Any]:
    """A channel type that reads nothing of the directory record."""
    return {}


ConsentDefault = Literal["opt_in", "opt_out"]


class ChannelConfig(Protocol):
    """A channel's config model (config/channel_models.py): ``type`` names its kind."""

    @property
    def type(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ChannelKind:
    """A channel type, as a scene kind is one (docs/contributing.md, "Adding a
    channel type"). ``name``: the config's ``type``; ``model``: its config
    model; ``build(name, model, context)``: the live channel;
    ``address_field``: the directory field it sends to (``email``,
    ``phone``, ``openid``, ``push`` or an attribute's name; None: it needs
    no address); ``default_consent``: for marketing, with no record (the
    config's ``delivery.audience.consent`` overrides it); ``template_fields``:
    what it reads of the directory record, as ``message.data`` fields
    (``Contact -> {name: value}``)."""

    name: str
    model: type[Any]
    build: Callable[[str, Any, BuildContext], Channel]
    address_field: str | None = None
    default_consent: ConsentDefault = "opt_out"
    template_fields: Callable[[Any], Mapping[str, Any]] = no_fields
