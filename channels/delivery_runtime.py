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
from typing import Any

from channels.catalog import Catalog, MemoryCatalog, RedisCatalog, read_products
from channels.deadletter import DEFAULT_STREAM, DeadLetterStore
from channels.feedback import RedisMessageIndex
from channels.pipeline import DeliveryPipeline, Mode, Outcome, StateLookup, build_pipeline
from channels.policy import RedisPolicyStore
from config.models import AppConfig
from triggers.errors import SceneTriggerError
from triggers.events import Trigger

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SyncDelivery:
    def __init__(self, config: AppConfig, mode: Mode, states: StateLookup,
                 catalog_file: str | None = None, redis_url: str | None = None,
                 dead_letter_stream: str = DEFAULT_STREAM) -> None:
        self._runner = asyncio.Runner()
        self._stream = dead_letter_stream
        self.dead_letter: DeadLetterStore | None = None  # live mode only
        self._states = states
        self._closers: list[Any] = []
        self.released: list[Outcome] = []
        try:
            self.pipeline: DeliveryPipeline = self._runner.run(
                self._build(config, mode, catalog_file, redis_url))
        except BaseException:
            self.close()
            raise

    async def _build(self, config: AppConfig, mode: Mode, catalog_file: str | None,
                     redis_url: str | None) -> DeliveryPipeline:
        from prometheus_client import CollectorRegistry

        from channels.logchannel import LogChannel
        from channels.registry import ChannelRegistry, ChannelSender, build_registry

        metrics = CollectorRegistry()
        catalog: Catalog | None = MemoryCatalog(read_products(catalog_file)) if (
            catalog_file) else None
        if mode == "dry-run":
            registry = ChannelRegistry()
            registry.add(LogChannel("log", max_records=1000))
            self._closers.append(registry)
            return build_pipeline(config, mode, ChannelSender(registry, metrics_registry=metrics),
                                  catalog=catalog, metrics_registry=metrics)
        from redis.asyncio import Redis

        url = redis_url or os.environ.get("SCENETRIGGER_REDIS_URL", DEFAULT_REDIS_URL)
        client = Redis.from_url(url, decode_responses=True)
        self._closers.append(client)
        models = getattr(config, "channels", None) or {}
        if not models:
            raise SceneTriggerError("--deliver live needs a 'channels:' section in the config")
        registry = build_registry(models)
        self._closers.append(registry)
        prefix = config.delivery.redis_prefix
        self.dead_letter = DeadLetterStore(client, self._stream)
        sender = ChannelSender(registry, dead_letter=self.dead_letter, metrics_registry=metrics)
        return build_pipeline(
            config, mode, sender,
            channels=registry.names(),
            catalog=catalog if catalog is not None else RedisCatalog(client, f"{prefix}cat:"),
            store=RedisPolicyStore(client), index=RedisMessageIndex(client, prefix),
            metrics_registry=metrics)

    def deliver(self, trigger: Trigger) -> Outcome:
        return self._runner.run(self._deliver(trigger))

    async def _deliver(self, trigger: Trigger) -> Outcome:
        self.released += await self.pipeline.release_due(trigger.ts, self._states)
        return await self.pipeline.deliver(trigger, self._states(trigger.user_id), trigger.ts)

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
