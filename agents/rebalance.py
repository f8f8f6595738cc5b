"""Two Faust 0.15 / aiokafka rebalance holes the worker closes.

1. Lost partitions with no committed offset. Faust hands aiokafka its *live*
   set of active partitions for a fetch (``Consumer._get_active_partitions``)
   and empties that set while it pauses partitions during a rebalance;
   aiokafka's ``Fetcher.fetched_records`` reads an empty set as "every
   partition". So a fetch in flight across a rebalance can return the
   records of newly assigned (still paused) stream partitions; Faust drops
   them (flow stopped or partition not active) and aiokafka's position has
   moved past them. Faust then "seeks stream partitions to committed
   offsets", but aiokafka's ``seek_to_committed`` only seeks partitions
   whose committed offset is > 0: a partition nobody committed yet (its owner
   died within its first commit interval) stays at the end and its events
   are never taken. :func:`seek_uncommitted_to_beginning` makes that seek
   also put such partitions at their beginning (``auto_offset_reset``
   earliest, what a fresh position would have been).

2. A commit that crawls after a takeover. Faust's recovery resumes the
   stream partitions with the flow already running and only then seeks them
   to their committed offsets, which takes a round trip per partition.
   Messages taken meanwhile move Faust's read offset ahead; the seek puts it
   back, the next message seen looks like a jump and Faust records a "gap"
   over offsets that are also acked. The duplicates break Faust's run of
   consecutive acked offsets, so each commit advances by one offset. Stopping
   the flow when the table has recovered (:func:`hold_flow_until_seek`, just
   before Faust resumes and seeks) means no message is taken until the seek
   is done; Faust resumes the flow itself right after it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

log = logging.getLogger(__name__)

_INSTALLED = "_scenetrigger_seek_uncommitted"


def seek_uncommitted_to_beginning(consumer: Any, topics: Collection[str]) -> None:
    """Wrap ``consumer.seek_to_committed`` (Faust's ``perform_seek`` calls it
    on every rebalance) so partitions of ``topics`` with no committed offset
    (or offset 0, which aiokafka does not seek either) are sought to their
    earliest offset. Idempotent."""
    if getattr(consumer, _INSTALLED, False):
        return
    original: Callable[[], Awaitable[Mapping[Any, int | None]]] = consumer.seek_to_committed
    wanted = frozenset(topics)

    async def seek_to_committed() -> Mapping[Any, int | None]:
        committed = await original()
        fresh = [tp for tp, offset in committed.items() if tp.topic in wanted and not offset]
        if fresh:
            earliest: Mapping[Any, int] = await consumer.earliest_offsets(*fresh)
            # In the consumer's thread, like Faust's own seeks.
            await consumer.seek_wait({tp: earliest.get(tp) or 0 for tp in fresh})
            log.info("uncommitted partitions sought to their beginning", extra={
                "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in fresh)})
        return committed

    consumer.seek_to_committed = seek_to_committed
    setattr(consumer, _INSTALLED, True)


def hold_flow_until_seek(consumer: Any) -> None:
    """From ``table.on_recover``: stop taking messages until Faust has sought
    the stream partitions (``Recovery.on_recovery_completed`` resumes the
    flow after its ``perform_seek``)."""
    consumer.stop_flow()
