"""Build the configured channels and send messages through them.

:func:`build_registry` turns the ``channels`` config section into live
channels (reading secrets from the environment); :class:`ChannelSender`
sends a message through a named channel, retries channels that do not retry
themselves, counts every outcome in Prometheus and dead-letters final
failures.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from channels.base import (
    INFRASTRUCTURE_ERRORS,
    BuildContext,
    Channel,
    ChannelConfig,
    ChannelKind,
    DeliveryResult,
    Message,
    MissingSecret,
)
from channels.errors import ChannelError
from channels.per_registry import PerRegistry

# Re-exported: the commands import them from here.
from channels.redis_client import DEFAULT_REDIS_URL as DEFAULT_REDIS_URL
from channels.redis_client import REDIS_SCHEMES as REDIS_SCHEMES
from channels.redis_client import REDIS_URL_ENV as REDIS_URL_ENV
from channels.redis_client import redis_client as redis_client
from channels.redis_client import redis_url_or_env as redis_url_or_env
from channels.transports import email, inbox, logchannel, provider, webhook
from channels.transports.deadletter import DeadLetterStore
from channels.transports.retry import Attempt, RetryPolicy, Sleep, run_attempts
from triggers.errors import ConfigError

log = logging.getLogger("scenetrigger.channels")


class UnknownChannelError(ChannelError):
    """A message names a channel that is not configured."""


@dataclass(slots=True)
class ChannelRegistry:
    channels: dict[str, Channel] = field(default_factory=dict)

    def get(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(sorted(self.channels)) or "none"
            raise UnknownChannelError(f"no channel {name!r} (configured: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.channels

    def names(self) -> list[str]:
        return list(self.channels)

    def add(self, channel: Channel) -> None:
        self.channels[channel.name] = channel

    async def close(self) -> None:
        for channel in self.channels.values():
            try:
                await channel.close()
            except Exception:  # closing must go on for the others
                log.exception("closing channel failed", extra={"channel": channel.name})


def build_registry(models: Mapping[str, ChannelConfig], *, env: Mapping[str, str] | None = None,
                   redis: aioredis.Redis | None = None) -> ChannelRegistry:
    """Live channels for the ``channels`` section. ``redis`` (if given) is
    shared by inbox channels and not closed by them. Raises
    :class:`ConfigError` naming the channel and field of every missing secret."""
    context = BuildContext(os.environ if env is None else env, redis)
    registry = ChannelRegistry()
    problems: list[str] = []
    for name, model in models.items():
        try:
            registry.add(build_channel(name, model, context))
        except MissingSecret as exc:
            problems.append(f"channel {name!r}, field {exc.field!r}: environment variable "
                            f"{exc.var!r} is {exc.why}")
    if problems:
        raise ConfigError(problems)
    return registry


# Every channel type, by the config's ``type``: one module each (its channel,
# its ``build`` and its :class:`ChannelKind`) and its config model in
# config/channel_models.py (docs/contributing.md, "Adding a channel type").
KINDS: dict[str, ChannelKind] = {
    kind.name: kind for kind in (webhook.KIND, inbox.KIND, email.KIND, *provider.KINDS,
                                 logchannel.KIND)
}


def kind_of(channel_type: str) -> ChannelKind:
    try:
        return KINDS[channel_type]
    except KeyError:
        raise ConfigError([f"unknown channel type {channel_type!r} "
                           f"(known: {', '.join(KINDS)})"]) from None


def build_channel(name: str, model: ChannelConfig, context: BuildContext) -> Channel:
    """The live channel of one config entry, built by its kind."""
    return kind_of(model.type).build(name, model, context)


def consent_defaults(overrides: Mapping[str, str] = {}) -> dict[str, str]:
    """Each channel type's marketing consent default (its kind's), with the
    config's ``delivery.audience.consent`` over it."""
    return {**{k.name: k.default_consent for k in KINDS.values()}, **overrides}


def address_fields() -> dict[str, str]:
    """The directory field each channel type sends to (types that need none left out)."""
    return {k.name: k.address_field for k in KINDS.values() if k.address_field is not None}


def contact_data(contact: Any) -> dict[str, Any]:
    """What the channel types read of a directory record, as ``message.data``
    fields (each kind's ``template_fields``: ``email``, ``phone``, ``openid``,
    ``device_token`` / ``platform`` / ``device_tokens``, ...)."""
    out: dict[str, Any] = {}
    for kind in KINDS.values():
        out.update(kind.template_fields(contact))
    return out


@dataclass(frozen=True, slots=True)
class DeliveryMetrics:
    deliveries: Counter
    seconds: Histogram
    dead_letters: Counter
    dead_letter_failures: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> DeliveryMetrics:
        """One set of metrics per Prometheus registry (registering twice fails)."""
        return _METRICS.get(registry, lambda: cls(
            Counter("scenetrigger_deliveries", "Deliveries by channel and outcome "
                    "(ok, retry_exhausted, rejected, error)", ["channel", "result"],
                    registry=registry),
            Histogram("scenetrigger_delivery_seconds", "Time to deliver, retries included",
                      ["channel"], registry=registry,
                      buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
                               30)),
            Counter("scenetrigger_dead_letters", "Deliveries written to the dead-letter",
                    ["channel"], registry=registry),
            Counter("scenetrigger_dead_letter_write_failures",
                    "Failed deliveries whose dead-letter write failed (lost for redrive)",
                    ["channel"], registry=registry),
        ))


_METRICS: PerRegistry[DeliveryMetrics] = PerRegistry()


OUTCOMES = ("ok", "retry_exhausted", "rejected", "error")


def outcome_label(result: DeliveryResult) -> str:
    if result.ok:
        return "ok"
    return "retry_exhausted" if result.retryable else "rejected"


@dataclass(slots=True)
class ChannelSender:
    """Send through a named channel: retries (for channels without their
    own), metrics, and the dead-letter for deliveries that failed for good."""

    registry: ChannelRegistry
    dead_letter: DeadLetterStore | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    metrics_registry: CollectorRegistry = REGISTRY
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    _metrics: DeliveryMetrics = field(init=False, repr=False)
    # Labelled children cached: ``labels()`` takes a lock and builds a key per call.
    _counted: dict[tuple[str, str], Any] = field(default_factory=dict, init=False, repr=False)
    _timed: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._metrics = DeliveryMetrics.on(self.metrics_registry)
        # Every configured channel's series exist from the start, at 0: a rate
        # or ratio (deploy/alerts.yml) is then defined before the first failure.
        for name in self.registry.names():
            for label in OUTCOMES:
                self._metrics.deliveries.labels(name, label)
            self._metrics.dead_letters.labels(name)
            self._metrics.dead_letter_failures.labels(name)

    async def send(self, message: Message, channel: str | None = None, *,
                   dead_letter: bool = True) -> DeliveryResult:
        """Deliver ``message`` via ``channel`` (default: ``message.channel``).
        Never raises for a delivery failure; raises
        :class:`UnknownChannelError` for a channel that is not configured."""
        name = channel if channel is not None else message.channel
        target = self.registry.get(name)
        started = time.perf_counter()
        if getattr(target, "retries_internally", False):
            result = await _guarded(target, message, name)
        else:
            async def attempt() -> Attempt:
                got = await _guarded(target, message, name)
                return Attempt(got.ok, got.error, got.retryable, got.status)
            result = await run_attempts(message, name, attempt, self.policy,
                                        sleep=self.sleep, rng=self.rng)
        label = outcome_label(result)
        if result.error is not None and result.error.startswith("channel raised"):
            label = "error"
        timer = self._timed.get(name)
        if timer is None:
            timer = self._timed[name] = self._metrics.seconds.labels(name)
        timer.observe(time.perf_counter() - started)
        counter = self._counted.get((name, label))
        if counter is None:
            counter = self._counted[(name, label)] = self._metrics.deliveries.labels(name, label)
        counter.inc()
        if not result.ok and dead_letter and self.dead_letter is not None:
            await self._bury(message, name, result)
        return result

    async def _bury(self, message: Message, name: str, result: DeliveryResult) -> None:
        assert self.dead_letter is not None
        try:
            await self.dead_letter.add(message, name, result)
        except Exception as exc:
            # Counted: such a delivery is in neither the channel nor the redrive stream.
            self._metrics.dead_letter_failures.labels(name).inc()
            log.exception("dead-letter write failed",
                          extra={"channel": name, "message_id": message.message_id,
                                 "trigger_id": message.trigger_id, "user_id": message.user_id,
                                 "error": result.error})
            if isinstance(exc, INFRASTRUCTURE_ERRORS):
                raise  # Redis is away: the delivery's lease stays, it is tried again
            return
        self._metrics.dead_letters.labels(name).inc()


async def _guarded(channel: Channel, message: Message, name: str) -> DeliveryResult:
    try:
        return await channel.send(message)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a channel bug must not kill the worker
        log.exception("channel raised", extra={"channel": name, "message_id": message.message_id})
        return DeliveryResult(False, name, message.message_id, 1,
                              f"channel raised {type(exc).__name__}: {exc}", False)
