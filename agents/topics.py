"""Kafka topic names and the dead-letter record, shared by the worker, the
producer and the HTTP collector. Constants and pure functions only."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson

from config.clock import wall_ms
from triggers.audiences.record import SHARED_TOPIC as SHARED_AUDIENCES

EVENTS = "scenetrigger-events"
TRIGGERS = "scenetrigger-triggers"
DEAD_LETTERS = "scenetrigger-deadletter"
TICKS = "scenetrigger-ticks"
JOURNEY_ACTIONS = "scenetrigger-journey-actions"  # journeys -> deliver
JOURNEYS_FEEDBACK = "scenetrigger-feedback"  # serve / deliver -> journeys
DECISIONS = "scenetrigger-decisions"  # deliver, journeys -> explain, console (channels/feedback/decisions.py)
DECISIONS_RETENTION_MS = 7 * 86_400_000  # when deliver or journeys creates the decisions topic
CONFIG = "scenetrigger-config"  # the versioned config (compacted; agents/config_store.py)
CATALOG = "scenetrigger-catalog"  # product records (compacted; agents/catalog_stream.py)
AUDIENCES = SHARED_AUDIENCES  # audience enter/exit (compacted; triggers/audiences/record.py)
PROFILES = "scenetrigger-profiles"  # each user's latest profile (compacted; agents/live_profiles.py)
# With --topic-prefix P a topic is P.<suffix>; without, its shared name.
_SHARED = {"events": EVENTS, "triggers": TRIGGERS, "journey-actions": JOURNEY_ACTIONS,
           "feedback": JOURNEYS_FEEDBACK, "decisions": DECISIONS, "config": CONFIG,
           "catalog": CATALOG, "audiences": AUDIENCES, "profiles": PROFILES}
DEFAULT_PARTITIONS = 4

# Where the broker is when no flag says: the env var tests and `make kafka-up` use.
BROKER_ENV = "SCENETRIGGER_KAFKA"
DEFAULT_BROKER = "127.0.0.1:9092"

# A dead-letter record keeps at most this much of the rejected input.
DEAD_LETTER_RAW_LIMIT = 64 * 1024


def topic_name(prefix: str | None, suffix: str) -> str:
    """``PREFIX.suffix``, or the shared name (``suffix``: events, triggers, journey-actions,
    feedback, decisions, config, catalog, audiences, profiles) when no prefix is given."""
    return f"{prefix}.{suffix}" if prefix else _SHARED[suffix]


def feedback_topics(prefix: str | None, journeys: bool) -> list[str]:
    """Where delivery feedback goes: the events topic (``PREFIX.events``),
    then, with ``journeys``, the journeys' feedback topic (``PREFIX.feedback``)."""
    return [topic_name(prefix, "events"), *([topic_name(prefix, "feedback")] if journeys else [])]


def bootstrap_servers(broker: str | None = None) -> str:
    """``kafka://h:p;h2:p2`` or ``h:p,h2:p2`` (or $SCENETRIGGER_KAFKA) -> ``h:p,h2:p2``."""
    url = broker or os.environ.get(BROKER_ENV) or DEFAULT_BROKER
    hosts = []
    for part in url.replace(";", ",").split(","):
        part = part.strip()
        if part.startswith("kafka://"):
            part = part[len("kafka://"):]
        if part:
            hosts.append(part.rstrip("/"))
    return ",".join(hosts)


def dead_letter_value(
    reason: str,
    detail: str,
    source: str,
    raw: bytes | str | None = None,
    *,
    where: str | int | None = None,
    now_ms: int | None = None,
) -> bytes:
    """One dead-letter message value (orjson): why, from where, and the input.

    ``raw`` is kept as text (invalid UTF-8 replaced) and cut to
    ``DEAD_LETTER_RAW_LIMIT`` bytes so one huge line cannot make a huge record.
    """
    record: dict[str, Any] = {
        "reason": reason,
        "detail": detail,
        "source": source,
        "rejected_at_ms": wall_ms() if now_ms is None else now_ms,
    }
    if where is not None:
        record["where"] = where
    if raw is not None:
        data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
        record["raw_bytes"] = len(data)
        record["raw"] = data[:DEAD_LETTER_RAW_LIMIT].decode("utf-8", "replace")
    return orjson.dumps(record)


def dead_letter_record(reason: str, detail: str, message: Any, now_ms: int,
                       index: int | None = None) -> bytes:
    """The shared dead-letter record (``agents.topics``), where = topic:partition:offset;
    input that is not UTF-8 is also kept whole-byte as base64 (``raw_b64``). An
    event of a batch record (``index`` given) keeps only its own JSON as ``raw``
    and its place in the record as ``index``."""
    value: bytes = message.value or b""
    where = f"{message.topic}:{message.partition}:{message.offset}"
    if index is not None:
        value = batch_item(value, index)
    record = dead_letter_value(reason, detail, "worker", value, where=where, now_ms=now_ms)
    if index is not None:
        obj = orjson.loads(record)
        obj["index"] = index
        return orjson.dumps(obj)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        obj = orjson.loads(record)
        obj["raw_b64"] = base64.b64encode(value[:DEAD_LETTER_RAW_LIMIT]).decode("ascii")
        record = orjson.dumps(obj)
    return record


def batch_item(value: bytes, index: int) -> bytes:
    """The JSON of one event of a batch record (the dead-letter path only)."""
    try:
        return orjson.dumps(orjson.loads(value)[index])
    except (orjson.JSONDecodeError, IndexError, TypeError):
        return value  # the record itself did not parse: keep it whole
