"""Running the delivery pipeline from synchronous code (``replay --deliver``).

:class:`SyncDelivery` owns an event loop and the pipeline's resources
(Redis clients and channels in live mode; deliveries that exhaust their
retries go to the Redis dead-letter stream, for ``scenetrigger redrive``).
The replay calls it once per
trigger with event time as ``now_ms``: due quiet-hours deferrals are
released first, then the trigger is delivered; nothing here changes which
triggers fire.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from channels.catalog import Catalog, MemoryCatalog, RedisCatalog, read_products
from channels.consent import Audience, RedisConsentStore
from channels.deadletter import DEFAULT_STREAM, DeadLetterStore
from channels.decisions import DecisionLog
from channels.directory import RedisDirectory
from channels.feedback import FeedbackSink, RedisMessageIndex
from channels.pipeline import DeliveryPipeline, Mode, Outcome, StateLookup, build_pipeline
from channels.policy import RedisPolicyStore
from channels.registry import REDIS_URL_ENV, redis_url_or_env
from config.channel_models import InboxModel
from config.models import AppConfig
from triggers.classify import Segmentation
from triggers.errors import SceneTriggerError
from triggers.events import Trigger
from triggers.state import UserState

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from channels.registry import ChannelRegistry



@dataclass(frozen=True, slots=True)
class LivePipeline:
    """A live pipeline and what its owner closes or inspects."""

    pipeline: DeliveryPipeline
    registry: ChannelRegistry  # close it (channel sessions)
    dead_letter: DeadLetterStore


def build_live_pipeline(config: AppConfig, client: Any, metrics: CollectorRegistry,
                        catalog: Catalog | None = None,
                        dead_letter_stream: str = DEFAULT_STREAM,
                        who: str = "live delivery",
                        redis_url: str | None = None,
                        feedback: FeedbackSink | None = None) -> LivePipeline:
    """The live pipeline over one Redis client (``decode_responses=True``):
    the config's channels, dead letters, policy, message index and (unless
    ``catalog`` is given) the catalog in Redis. Shared by ``replay --deliver
    live`` and ``scenetrigger deliver``. ``redis_url`` (the command's
    ``--redis-url``) is also the inbox channels' Redis, unless a channel names
    its own ``redis_url_env`` and that variable is set. ``feedback`` receives
    the pipeline's delivered / failed events."""
    from channels.registry import ChannelSender, build_registry

    models = getattr(config, "channels", None) or {}
    if not models:
        raise SceneTriggerError(f"{who} needs a 'channels:' section in the config")
    registry = build_registry(models, env=inbox_env(models, redis_url))
    prefix = config.delivery.redis_prefix
    tracking = config.delivery.tracking
    mail = [n for n, m in models.items() if getattr(m, "type", None) == "email"]
    if mail and not (tracking.base_url and os.environ.get(tracking.secret_env)):
        raise SceneTriggerError(
            f"channel {mail[0]!r}: marketing email needs its unsubscribe link: set "
            f"delivery.tracking.base_url and ${tracking.secret_env}")
    dead_letter = DeadLetterStore(client, dead_letter_stream)
    sender = ChannelSender(registry, dead_letter=dead_letter, metrics_registry=metrics)
    pipeline = build_pipeline(
        config, "live", sender,
        channels=registry.names(),
        catalog=catalog if catalog is not None else RedisCatalog(client, f"{prefix}cat:"),
        store=RedisPolicyStore(client), index=RedisMessageIndex(client, prefix),
        feedback=feedback, metrics_registry=metrics, audience=build_audience(config, client))
    return LivePipeline(pipeline, registry, dead_letter)


def build_audience(config: AppConfig, client: Any) -> Audience:
    """Directory, consent and do-not-contact in Redis under ``delivery.redis_prefix``."""
    prefix = config.delivery.redis_prefix
    model = config.delivery.audience
    kinds = {name: str(getattr(m, "type", name)) for name, m in config.channels.items()}
    return Audience(RedisDirectory(client, prefix), RedisConsentStore(client, prefix), kinds,
                    model.consent, model.transactional_scenes)


def inbox_env(models: Mapping[str, Any], redis_url: str | None) -> dict[str, str]:
    """The environment the channels are built with: ``--redis-url`` stands in
    for the default ``$SCENETRIGGER_REDIS_URL`` of inbox channels (a flag
    beats the environment) and for a channel's own variable when it is unset."""
    env = dict(os.environ)
    if redis_url:
        for model in models.values():
            if isinstance(model, InboxModel):
                var = model.redis_url_env
                if var == REDIS_URL_ENV or not env.get(var):
                    env[var] = redis_url
    return env


def file_catalog(path: str | None) -> Catalog | None:
    """``--catalog FILE`` as an in-memory catalog (None without a file)."""
    return MemoryCatalog(read_products(path)) if path else None


class SyncDelivery:
    def __init__(self, config: AppConfig, mode: Mode, states: StateLookup,
                 catalog_file: str | None = None, redis_url: str | None = None,
                 dead_letter_stream: str = DEFAULT_STREAM,
                 decisions: DecisionLog | None = None) -> None:
        self._runner = asyncio.Runner()
        self._stream = dead_letter_stream
        self.dead_letter: DeadLetterStore | None = None  # live mode only
        self._states = states
        self._closers: list[Any] = []
        self.released: list[Outcome] = []
        try:
            self.pipeline: DeliveryPipeline = self._runner.run(
                self._build(config, mode, catalog_file, redis_url))
            self.pipeline.decisions = decisions
        except BaseException:
            self.close()
            raise

    async def _build(self, config: AppConfig, mode: Mode, catalog_file: str | None,
                     redis_url: str | None) -> DeliveryPipeline:
        from prometheus_client import CollectorRegistry

        from channels.logchannel import LogChannel
        from channels.registry import ChannelRegistry, ChannelSender

        metrics = CollectorRegistry()
        catalog = file_catalog(catalog_file)
        if mode == "dry-run":
            registry = ChannelRegistry()
            registry.add(LogChannel("log", max_records=1000))
            self._closers.append(registry)
            return build_pipeline(config, mode, ChannelSender(registry, metrics_registry=metrics),
                                  catalog=catalog, metrics_registry=metrics)
        from redis.asyncio import Redis

        url = redis_url_or_env(redis_url)
        client = Redis.from_url(url, decode_responses=True)
        self._closers.append(client)
        live = build_live_pipeline(config, client, metrics, catalog, self._stream,
                                   "--deliver live", redis_url=url)
        self._closers.append(live.registry)
        self.dead_letter = live.dead_letter
        return live.pipeline

    def deliver(self, trigger: Trigger) -> Outcome:
        return self._runner.run(self._deliver(trigger))

    async def _deliver(self, trigger: Trigger) -> Outcome:
        self.released += await self.pipeline.release_due(trigger.ts, self._states)
        return await self.pipeline.deliver(trigger, self._states(trigger.user_id), trigger.ts)

    def release(self, now_ms: int) -> None:
        """Release what is due at ``now_ms`` (another user's trigger moved the clock)."""
        async def run() -> None:
            self.released += await self.pipeline.release_due(now_ms, self._states)
        self._runner.run(run())

    def segment(self, state: UserState | None, now_ms: int) -> Segmentation:
        """The user's style, segment and tags as content selection sees them."""
        return self.pipeline.selector.segment(state, now_ms)

    def finish(self, now_ms: int | None) -> int:
        """Release what is due at the final clock; returns how many stay deferred."""
        async def run() -> int:
            if now_ms is not None:
                self.released += await self.pipeline.release_due(now_ms, self._states)
            return await self.pipeline.policy.deferred_count()
        return self._runner.run(run())

    def close(self) -> None:
        async def run() -> None:
            for item in reversed(self._closers):
                closer = getattr(item, "aclose", None) or item.close
                await closer()
        try:
            self._runner.run(run())
        finally:
            self._runner.close()
