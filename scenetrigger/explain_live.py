"""``scenetrigger explain USER --broker``: the timeline from a live deployment.

Reads the user's records (by key) from the events, triggers and decisions
topics and the user's latest state from the worker's table changelog
(``APP_ID-user-state-changelog``). Each topic is read from its beginning to its
current end (as ``scenetrigger export`` does): right for a lookup on a
deployment whose topics' retention keeps them small; it is not an index.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from channels.decisions import DecisionRecord
from config.models import AppConfig
from scenetrigger.explain import Timeline, windows_now
from triggers.errors import SceneTriggerError, StateDecodeError
from triggers.events import Event, Trigger, decode_event_record
from triggers.explain import explain_scene
from triggers.state import UserState


def live_timeline(broker: str | None, prefix: str | None, config: AppConfig, user_id: str,
                  timeout_s: float = 60, app_id: str = "scenetrigger",
                  now_ms: int | None = None) -> Timeline:
    return asyncio.run(_timeline(broker, prefix, config, user_id, timeout_s, app_id,
                                 now_ms if now_ms is not None else int(time.time() * 1000)))


async def _keyed(bootstrap: str, topic: str, key: bytes | None, timeout_s: float) -> list[Any]:
    """The topic's records with this key (every record when ``key`` is None)."""
    from agents.export import topic_records

    try:
        return [r async for r in topic_records(bootstrap, topic, timeout_s)
                if key is None or r.key == key]
    except SceneTriggerError as exc:
        if "not found" in str(exc):
            return []  # e.g. no deliver has run yet: no decisions topic
        raise


async def _timeline(broker: str | None, prefix: str | None, config: AppConfig, user_id: str,
                    timeout_s: float, app_id: str, now_ms: int) -> Timeline:
    from agents.engine_host import unpack_state
    from agents.topics import bootstrap_servers, topic_name
    from channels.catalog import MemoryCatalog
    from channels.content import ContentSelector

    bootstrap = bootstrap_servers(broker)
    key = user_id.encode()
    timeline = Timeline(user_id, clock_ms=now_ms)
    limits = config.id_limits()
    # Batched records (the collector's and produce's) have no key: read every
    # record and keep the user's events, decoded as the worker decodes them.
    for record in await _keyed(bootstrap, topic_name(prefix, "events"), None, timeout_s):
        if record.key is not None and record.key != key:
            continue
        for item in decode_event_record(record.value or b"", config.engine.max_line_bytes,
                                        limits):
            if type(item) is Event and item.user_id == user_id:
                timeline.events.append(item)  # a rejected one was never taken
    for record in await _keyed(bootstrap, topic_name(prefix, "triggers"), key, timeout_s):
        raw = orjson.loads(record.value)
        trig = Trigger(raw["scene"], raw["user_id"], raw.get("key"), raw["ts"])
        if trig not in timeline.triggers:  # a redone batch may send one again
            timeline.triggers.append(trig)
    seen: set[bytes] = set()
    for record in await _keyed(bootstrap, topic_name(prefix, "decisions"), key, timeout_s):
        if record.value not in seen:
            seen.add(record.value)
            timeline.decisions.append(DecisionRecord.decode(record.value))
    state: UserState | None = None
    table = f"{app_id}-user-state-changelog"  # Faust's changelog of the worker's table
    for record in await _keyed(bootstrap, table, key, timeout_s):
        try:
            state = None if record.value is None else UserState.decode(
                unpack_state(record.value)[1])
        except StateDecodeError:
            continue
    scenes = config.scene_list()
    timeline.scenes = [explain_scene(s, timeline.events, timeline.triggers, now_ms)
                       for s in scenes]
    timeline.windows = windows_now(state, scenes, now_ms)
    selector = ContentSelector(config.content, MemoryCatalog(), config.delivery.default_timezone)
    timeline.segmentation = selector.segment(state, now_ms)
    return timeline
