"""What an erasure writes on Kafka (scenetrigger/ops/erase_events.py) on a
real broker: the profiles tombstone reaches ``PREFIX.profiles`` even when
that topic appeared after the erasing process started (``serve`` runs for
weeks; a worker with live profiles, or ``scenetrigger profiles``, creates
the topic whenever it first starts)."""

from __future__ import annotations

import orjson
import pytest

from agents.export import read_topic
from agents.kafka_clients import new_producer
from agents.producer import ensure_topics
from scenetrigger.ops.erase_events import erase_sender
from tests.agents.worker_support import unique

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_profiles_topic_created_after_the_start_gets_the_tombstone(
        kafka_bootstrap: str) -> None:
    prefix = unique("erase-events")
    events, decisions, profiles = (f"{prefix}.{n}" for n in ("events", "decisions", "profiles"))
    await ensure_topics(kafka_bootstrap, [events, decisions], 1)
    producer = new_producer(kafka_bootstrap)
    await producer.start()
    try:
        forget = await erase_sender(producer, kafka_bootstrap, prefix, "serve")
        await ensure_topics(kafka_bootstrap, [profiles], 1,
                            configs={profiles: {"cleanup.policy": "compact"}})
        await forget("ann", 1_700_000_000_000)
    finally:
        await producer.stop()
    assert [(r.key, orjson.loads(r.value)["type"]) for r in
            await read_topic(kafka_bootstrap, events, 20)] == [(b"ann", "erase")]
    assert [(r.key, r.value) for r in await read_topic(kafka_bootstrap, profiles, 20)] == [
        (b"ann", None)]
