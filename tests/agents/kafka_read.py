"""Read a whole topic back in tests (the product's :mod:`agents.export`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from agents.export import read_topic
from triggers.events import Event, decode_event_record

__all__ = ["read_topic", "record_events", "unique_topic"]


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def record_events(records: Iterable[Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """``(partition, event fields)`` of every event of the records, in order
    (a record holds one event or a batch); fails on anything not an event."""
    out: list[tuple[int, Mapping[str, Any]]] = []
    for record in records:
        for item in decode_event_record(record.value):
            assert isinstance(item, Event), item
            out.append((record.partition, item.fields))
    return out
