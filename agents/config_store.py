"""The versioned config's Kafka store: one compacted topic (``PREFIX.config``,
one partition), one record per version keyed ``v<number>``, so compaction
keeps every version. Readers keep their position and read only what is new."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.kafka_clients import new_producer, new_reader
from agents.producer import ensure_topics
from config.versions import ConfigVersion

# min.insync.replicas: the project's (agents.replication), as on every topic.
COMPACTED = {"cleanup.policy": "compact"}


class KafkaVersionStore:
    """:class:`config.versions.VersionStore` on a compacted Kafka topic."""

    def __init__(self, bootstrap: str, topic: str, replication: int | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.replication = replication  # None: min(3, brokers)
        self._consumer: Any = None
        self._producer: Any = None
        self._seen: dict[int, ConfigVersion] = {}
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        from aiokafka import TopicPartition

        await ensure_topics(self.bootstrap, [self.topic], 1, configs={self.topic: COMPACTED},
                            replication=self.replication)
        consumer = new_reader(self.bootstrap)
        await consumer.start()
        self._tp = TopicPartition(self.topic, 0)
        consumer.assign([self._tp])
        await consumer.seek_to_beginning(self._tp)
        self._consumer = consumer

    async def versions(self) -> list[ConfigVersion]:
        async with self._lock:
            if self._consumer is None:
                await self._start()
            consumer, tp = self._consumer, self._tp
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1_000)
                for record in batch.get(tp, []):
                    try:
                        version = ConfigVersion.from_json(record.value)
                    except (ValueError, KeyError, TypeError):
                        continue  # not a version record
                    self._seen[version.version] = version  # a later record of a key wins
        return [self._seen[n] for n in sorted(self._seen)]

    async def append(self, version: ConfigVersion) -> None:
        if self._producer is None:
            await ensure_topics(self.bootstrap, [self.topic], 1,
                                configs={self.topic: COMPACTED}, replication=self.replication)
            self._producer = new_producer(self.bootstrap)
            await self._producer.start()
        await self._producer.send_and_wait(self.topic, version.to_json(),
                                           key=f"v{version.version:08d}".encode(), partition=0)
        # Two pushes at once compute the same number; under one key the later
        # record wins (and compaction drops the other): tell the loser.
        stored = {v.version: v for v in await self.versions()}.get(version.version)
        if stored != version:
            from triggers.errors import SceneTriggerError

            raise SceneTriggerError(f"version {version.version} was pushed meanwhile by "
                                    f"{stored.author if stored else 'someone'}: push again")

    async def close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()
        self._consumer = self._producer = None
