"""Kafka topic names and the dead-letter record, shared by the worker, the
producer and the HTTP collector. Constants and pure functions only."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

EVENTS = "scenetrigger-events"
TRIGGERS = "scenetrigger-triggers"
DEAD_LETTERS = "scenetrigger-deadletter"
TICKS = "scenetrigger-ticks"
JOURNEY_ACTIONS = "scenetrigger-journey-actions"  # journeys -> deliver
JOURNEYS_FEEDBACK = "scenetrigger-feedback"  # serve / deliver -> journeys
DECISIONS = "scenetrigger-decisions"  # deliver -> explain, console (channels/decisions.py)
# With --topic-prefix P a topic is P.<suffix>; without, its shared name.
_SHARED = {"events": EVENTS, "triggers": TRIGGERS, "journey-actions": JOURNEY_ACTIONS,
           "feedback": JOURNEYS_FEEDBACK, "decisions": DECISIONS}
DEFAULT_PARTITIONS = 4

# Where the broker is when no flag says: the env var tests and `make kafka-up` use.
BROKER_ENV = "SCENETRIGGER_KAFKA"
DEFAULT_BROKER = "127.0.0.1:9092"

# A dead-letter record keeps at most this much of the rejected input.
DEAD_LETTER_RAW_LIMIT = 64 * 1024


def topic_name(prefix: str | None, suffix: str) -> str:
    """``PREFIX.suffix``, or the shared name (``suffix``: events, triggers,
    journey-actions, feedback, decisions) when no prefix is given."""
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
        "rejected_at_ms": int(time.time() * 1000) if now_ms is None else now_ms,
    }
    if where is not None:
        record["where"] = where
    if raw is not None:
        data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
        record["raw_bytes"] = len(data)
        record["raw"] = data[:DEAD_LETTER_RAW_LIMIT].decode("utf-8", "replace")
    return orjson.dumps(record)
