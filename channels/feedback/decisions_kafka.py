"""The decision log on Kafka (``scenetrigger deliver``): records keyed by user
on the decisions topic (``PREFIX.decisions``), whose retention bounds them.

:meth:`KafkaDecisionLog.write` only queues (the pipeline writes from a hot
path); :meth:`flush` sends the queue and waits for the acknowledgements. The
consumer flushes it with the feedback before it commits a batch's offsets, so
a committed trigger's decision is in the log (at-least-once: a redone batch
can write a decision twice, with the same trigger id).
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.errors import ChannelError
from channels.feedback.decisions import DecisionRecord


class DecisionsNotAcked(ChannelError):
    """Some decision records were not acknowledged; the next flush sends them again."""


class KafkaDecisionLog:
    def __init__(self, producer: Any, topic: str) -> None:
        self.producer = producer  # a started aiokafka producer; may be set later
        self.topic = topic
        self._queue: list[DecisionRecord] = []
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def write(self, record: DecisionRecord) -> None:
        self._queue.append(record)

    async def flush(self) -> None:
        async with self._lock:
            records, self._queue = self._queue, []
            futures = []
            try:
                for record in records:
                    futures.append(await self.producer.send(
                        self.topic, record.encode(), key=record.user_id.encode()))
                await asyncio.gather(*futures)
            except Exception as exc:
                self._queue[:0] = records  # all again: a duplicate beats a lost record
                raise DecisionsNotAcked(f"{len(records)} decision records not acknowledged: "
                                        f"{exc!r}") from exc


class Flushes:
    """Several flushes as one (the consumer's feedback hook takes one)."""

    def __init__(self, *parts: Any) -> None:
        self.parts = [p for p in parts if p is not None]

    async def flush(self) -> None:
        for part in self.parts:
            await part.flush()
