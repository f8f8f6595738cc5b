"""What an erasure writes on Kafka, one function for ``scenetrigger erase``
and ``serve``'s ``DELETE /users/{id}``: the ``erase`` event (the worker
deletes the user's state and writes its own tombstones), the decision log's
record of it, and the user's tombstone on the compacted ``PREFIX.profiles``
when that topic exists (so an erased profile never waits on the worker's
at-most-once one, and a lagging consumer's older put is followed by it)."""

from __future__ import annotations

from typing import Any

import orjson

from agents.kafka_clients import open_client
from agents.replication import existing_topics
from agents.topics import topic_name
from channels.feedback.decisions import erasure_record
from scenetrigger.ops.erasure import ForgetInWorker
from triggers.events import ERASE


async def erase_sender(producer: Any, bootstrap: str, prefix: str | None,
                       source: str) -> ForgetInWorker:
    """The ``forget`` an :class:`~scenetrigger.ops.erasure.Eraser` calls, over
    a started aiokafka ``producer``; ``source`` names the caller in the log."""
    events = topic_name(prefix, "events")
    decisions = topic_name(prefix, "decisions")
    profiles = topic_name(prefix, "profiles")
    # Looked up at each erasure until it is there (then kept): serve runs for
    # weeks, and the topic appears when live profiles are first turned on.
    found = [await _existing(bootstrap, profiles)]

    async def forget_in_worker(user_id: str, now_ms: int) -> None:
        if found[0] is None:  # first: a lookup that fails sends nothing
            found[0] = await _existing(bootstrap, profiles)
        key = user_id.encode()
        event = {"user_id": user_id, "ts": now_ms, "type": ERASE}
        await producer.send_and_wait(events, orjson.dumps(event), key=key)
        await producer.send_and_wait(decisions, erasure_record(user_id, now_ms, source).encode(),
                                     key=key)
        if found[0] is not None:
            await producer.send_and_wait(profiles, None, key=key)

    return forget_in_worker


async def _existing(bootstrap: str, topic: str) -> str | None:
    """``topic`` if the cluster has it (a send to a missing one would wait)."""
    client = await open_client(bootstrap)
    try:
        return topic if topic in await existing_topics(client, [topic]) else None
    finally:
        await client.close()
