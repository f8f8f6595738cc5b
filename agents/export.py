"""Read a topic back: every partition from its beginning to the end offsets
taken at the start, without a consumer group (nothing is committed, other
readers are not disturbed). Used by ``scenetrigger export`` and the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from triggers.errors import SceneTriggerError

# A topic the broker still does not list after this long is missing: a
# misspelt name, or an optional topic (decisions before any deliver ran) must
# not cost the whole read timeout (export's is 5 minutes).
MISSING_TOPIC_WAIT_S = 5.0


async def topic_records(bootstrap: str, topic: str, timeout_s: float = 60.0,
                        on_total: Callable[[int], None] | None = None) -> AsyncIterator[Any]:
    """Yield the records (aiokafka ``ConsumerRecord``) partition batch by
    partition batch; ``on_total`` learns how many there are before the first.
    Raises :class:`SceneTriggerError` when the topic does not exist or the end
    is not reached within ``timeout_s``."""
    from aiokafka import TopicPartition

    from agents.faust_compat import refresh_metadata
    from agents.kafka_clients import started_reader

    consumer = await started_reader(bootstrap)  # probed: a wrong service fails in seconds
    try:
        deadline = time.monotonic() + timeout_s
        missing_deadline = time.monotonic() + min(timeout_s, MISSING_TOPIC_WAIT_S)
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            if time.monotonic() > missing_deadline:
                raise SceneTriggerError(f"topic {topic} not found (no partitions)")
            await refresh_metadata(consumer)
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        if on_total is not None:
            on_total(sum(ends[tp] - starts[tp] for tp in tps))
        left = {tp for tp in tps if ends[tp] > starts[tp]}
        while left:
            if time.monotonic() > deadline:
                raise SceneTriggerError(f"could not read {topic} to its end in {timeout_s:g}s")
            batch = await consumer.getmany(*left, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` (see :func:`topic_records`), in a list."""
    return [record async for record in topic_records(bootstrap, topic, timeout_s)]
