"""``scenetrigger explain USER --broker``: the timeline from a live deployment.

Reads the user's records (by key) from the events, triggers and decisions
topics and the user's latest state from the worker's table changelog
(``APP_ID-user-state-changelog``). Each topic is read from its beginning to its
current end (as ``scenetrigger export`` does): right for a lookup on a
deployment whose topics' retention keeps them small; it is not an index.
"""

from __future__ import annotations

import asyncio
import difflib
from typing import Any

from channels.feedback.decisions import ERASED, DecisionRecord
from config.clock import wall_ms
from config.models import AppConfig
from scenetrigger.ops.explain import Timeline, assemble_timeline
from triggers.errors import SceneTriggerError, StateDecodeError
from triggers.events import Event, decode_event_record
from triggers.state import UserState
from triggers.wire import decode_trigger


def live_timeline(broker: str | None, prefix: str | None, config: AppConfig, user_id: str,
                  timeout_s: float = 60, app_id: str = "scenetrigger",
                  now_ms: int | None = None, redis_url: str | None = None,
                  tags_prefix: str = "scenetrigger:") -> Timeline:
    """With ``redis_url``, also the strategies' tags and the lead score
    (``tags_prefix``: as ``journeys --redis-prefix``), and the erasure
    receipt: an erased user's records up to the erasure are not shown (the
    topics keep them until their retention ends)."""
    now = now_ms if now_ms is not None else wall_ms()
    erased = asyncio.run(_erased_at(config, redis_url, user_id)) if redis_url else None
    timeline = asyncio.run(_timeline(broker, prefix, config, user_id, timeout_s, app_id, now,
                                     erased))
    if redis_url:
        asyncio.run(_strategy_view(timeline, config, redis_url, tags_prefix, now))
    return timeline


async def _strategy_view(timeline: Timeline, config: AppConfig, redis_url: str,
                         tags_prefix: str, now_ms: int) -> None:
    from channels.redis_client import redis_client
    from strategies.scoring import decayed
    from strategies.store import RedisTagStore

    client = redis_client(redis_url, decode_responses=True)
    try:
        store = RedisTagStore(client, tags_prefix)
        timeline.strategy_tags = sorted(await store.tags(timeline.user_id))
        score = await store.score(timeline.user_id)
        timeline.score = (0.0 if score is None else
                          decayed(score, now_ms, config.strategies.scoring.half_life))
    finally:
        await client.aclose()


async def _erased_at(config: AppConfig, redis_url: str, user_id: str) -> int | None:
    from channels.erasure_receipts import erased_at
    from channels.redis_client import redis_client

    client = redis_client(redis_url)
    try:
        return (await erased_at(client, config.delivery.redis_prefix, [user_id])).get(user_id)
    finally:
        await client.aclose()


async def _keyed(bootstrap: str, topic: str, key: bytes | None, timeout_s: float,
                 required: bool = False) -> list[Any]:
    """The topic's records with this key (every record when ``key`` is None).
    A missing ``required`` topic is an error naming the prefixes there are."""
    from agents.export import topic_records

    try:
        return [r async for r in topic_records(bootstrap, topic, timeout_s)
                if key is None or r.key == key]
    except SceneTriggerError as exc:
        if "not found" not in str(exc):
            raise
        if required:  # a mistyped --topic-prefix: not "nothing recorded for this user"
            raise SceneTriggerError(f"no topic {topic} on {bootstrap}: no such topic or "
                                    f"prefix (is --topic-prefix right? "
                                    f"{await _prefixes(bootstrap, _prefix_of(topic))})"
                                    ) from None
        return []  # e.g. no deliver has run yet: no decisions topic


def _prefix_of(topic: str) -> str | None:
    """``PREFIX`` of ``PREFIX.events``; None for a topic of no prefix."""
    head, dot, _ = topic.rpartition(".")
    return head if dot else None


async def _prefixes(bootstrap: str, wanted: str | None = None) -> str:
    """The topic prefixes with an events topic on this cluster, in words; the
    ones closest to the mistyped ``wanted`` first (a cluster may hold dozens)."""
    from agents.kafka_clients import new_admin
    from agents.topics import topic_name

    admin = new_admin(bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    found = sorted(t[:-len(".events")] for t in topics if t.endswith(".events"))
    if wanted:
        close = difflib.get_close_matches(wanted, found, n=len(found), cutoff=0.6)
        found = [*close, *(p for p in found if p not in close)]
    shared = [f"{topic_name(None, 'events')} (no prefix)"] if topic_name(None, "events") in \
        topics else []
    named = [*(repr(p) for p in found), *shared]
    more = f" and {len(named) - 10} more" if len(named) > 10 else ""
    return (f"events topics here: {', '.join(named[:10])}{more}" if named else
            "no events topic here at all")


async def _timeline(broker: str | None, prefix: str | None, config: AppConfig, user_id: str,
                    timeout_s: float, app_id: str, now_ms: int,
                    erased_ms: int | None = None) -> Timeline:
    from agents.stored_state import unpack_state
    from agents.topics import bootstrap_servers, topic_name

    bootstrap = bootstrap_servers(broker)
    key = user_id.encode()
    limits = config.id_limits()
    # Batched records (the collector's and produce's) have no key: read every
    # record and keep the user's events, decoded as the worker decodes them.
    events = []
    for record in await _keyed(bootstrap, topic_name(prefix, "events"), None, timeout_s,
                               required=True):
        if record.key is not None and record.key != key:
            continue
        for item in decode_event_record(record.value or b"", config.engine.max_line_bytes,
                                        limits):
            if type(item) is Event and item.user_id == user_id:
                events.append(item)  # a rejected one was never taken
    triggers = [decode_trigger(record.value).trigger for record in
                await _keyed(bootstrap, topic_name(prefix, "triggers"), key, timeout_s)]
    decisions = [DecisionRecord.decode(record.value) for record in
                 await _keyed(bootstrap, topic_name(prefix, "decisions"), key, timeout_s)]
    state: UserState | None = None
    table = f"{app_id}-user-state-changelog"  # Faust's changelog of the worker's table
    for record in await _keyed(bootstrap, table, key, timeout_s):
        try:
            state = None if record.value is None else UserState.decode(
                unpack_state(record.value)[1])
        except StateDecodeError:
            continue
    if erased_ms is not None:
        events = [e for e in events if e.ts > erased_ms]
        triggers = [t for t in triggers if t.ts > erased_ms]
        decisions = [d for d in decisions if d.ts > erased_ms or d.outcome == ERASED]
    timeline = assemble_timeline(user_id, events, triggers, decisions, state, config, now_ms)
    timeline.erased_ms = erased_ms
    return timeline
