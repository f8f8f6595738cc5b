"""Running the delivery pipeline from synchronous code (``replay --deliver``).

:class:`SyncDelivery` owns an event loop and a :class:`channels.assembly.Delivery`
(:func:`~channels.assembly.open_delivery`: in live mode, Redis and the
channels; deliveries that exhaust their retries go to the Redis dead-letter
stream, for ``scenetrigger redrive``). The replay calls it once per trigger
with event time as ``now_ms``: due quiet-hours deferrals are released first,
then the trigger is delivered; nothing here changes which triggers fire.
"""

from __future__ import annotations

import asyncio

from channels.assembly import Delivery, file_catalog, open_delivery
from channels.feedback.decisions import DecisionLog
from channels.pipeline import DeliveryPipeline, Mode, Outcome, StateLookup
from channels.transports.deadletter import DEFAULT_STREAM, DeadLetterStore
from config.models import AppConfig
from triggers.classify import Segmentation
from triggers.events import Trigger
from triggers.state import UserState


class SyncDelivery:
    def __init__(self, config: AppConfig, mode: Mode, states: StateLookup,
                 catalog_file: str | None = None, redis_url: str | None = None,
                 dead_letter_stream: str = DEFAULT_STREAM,
                 decisions: DecisionLog | None = None) -> None:
        self._runner = asyncio.Runner()
        self._states = states
        self.released: list[Outcome] = []
        self._delivery: Delivery | None = None
        try:
            self._delivery = open_delivery(config, mode, catalog=file_catalog(catalog_file),
                                           redis_url=redis_url,
                                           dead_letter_stream=dead_letter_stream,
                                           who="--deliver live")
        except BaseException:
            self.close()
            raise
        self.pipeline: DeliveryPipeline = self._delivery.pipeline
        self.pipeline.decisions = decisions
        self.dead_letter: DeadLetterStore | None = self._delivery.dead_letter  # live only

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
        try:
            if self._delivery is not None:
                self._runner.run(self._delivery.aclose())
        finally:
            self._runner.close()
