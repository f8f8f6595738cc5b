"""The catalog change stream on Kafka: ``PREFIX.catalog`` (shared name
``scenetrigger-catalog``), a compacted topic keyed by product id whose values
are :class:`triggers.catalog.CatalogRecord` JSON, so after compaction the
topic holds each product's latest record: it *is* the catalog's last version.

Fed by ``scenetrigger catalog load FILE --broker`` (only the products that
differ from the topic's last version, read back from the topic itself: no
second copy in Redis to drift from it), ``scenetrigger produce --catalog``
(every record of the file, no diff) and ``POST /catalog`` on ``serve``.
Refused records go to the dead-letter topic with their reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.config_store import COMPACTED
from agents.kafka_clients import new_producer
from agents.producer import MAX_RECORD_BYTES, PipelinedProducer, Sink, ensure_topics
from agents.topics import DEAD_LETTERS, DEFAULT_PARTITIONS, dead_letter_value, topic_name
from triggers.catalog import (
    CatalogChange,
    CatalogRecord,
    catalog_changes,
    changed_records,
    decode_catalog_record,
)
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import (
    DEFAULT_MAX_ID_CHARS,
    REASON_TOO_DEEP,
    REASON_TOO_LARGE,
    TOO_DEEP_DETAIL,
)

# (where: line number or index, the record or why not, the raw input)
Decoded = tuple[int, "CatalogRecord | EventRejected", bytes]


@dataclass(frozen=True, slots=True)
class CatalogTopics:
    catalog: str
    dead_letters: str

    @classmethod
    def of(cls, prefix: str | None, catalog: str | None = None,
           dead_letters: str | None = None) -> CatalogTopics:
        """``PREFIX.catalog`` and ``PREFIX.dead-letters`` (the dead-letter
        topic ``produce`` and the worker use), or the shared names."""
        topics = cls(catalog or topic_name(prefix, "catalog"),
                     dead_letters or (f"{prefix}.dead-letters" if prefix else DEAD_LETTERS))
        if topics.catalog == topics.dead_letters:
            raise SceneTriggerError("the catalog and dead-letter topics must differ")
        return topics


def decode_lines(lines: Iterable[bytes], max_id_chars: int = DEFAULT_MAX_ID_CHARS
                 ) -> Iterator[Decoded]:
    """Each non-blank JSONL line: (line number, record or rejection, line)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        yield number, _decode(line, max_id_chars), line.rstrip(b"\r\n")


def decode_items(items: Iterable[Any], max_id_chars: int = DEFAULT_MAX_ID_CHARS
                 ) -> Iterator[Decoded]:
    """Each parsed JSON value of a request body: (index, record or rejection, its JSON)."""
    import orjson

    for index, obj in enumerate(items):
        try:
            raw = orjson.dumps(obj)
        except orjson.JSONEncodeError:  # nesting orjson parses but will not write back
            yield index, EventRejected(REASON_TOO_DEEP, TOO_DEEP_DETAIL), b""
            continue
        yield index, _decode(raw, max_id_chars), raw


def _decode(raw: bytes, max_id_chars: int) -> CatalogRecord | EventRejected:
    if len(raw) > MAX_RECORD_BYTES:
        return EventRejected(REASON_TOO_LARGE, f"the record is {len(raw)} bytes, the "
                             f"producer's limit is {MAX_RECORD_BYTES}")
    try:
        return decode_catalog_record(raw, max_id_chars)
    except EventRejected as exc:
        return exc


@dataclass
class CatalogSummary:
    read: int = 0  # valid records read
    sent: int = 0
    unchanged: int = 0  # valid, but equal to the topic's last version (diff mode)
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    topic: str = ""
    dead_letter_topic: str = ""
    sent_ids: list[str] = field(default_factory=list)
    # Diff mode: what the sent records change (nothing acts on them yet).
    changes: list[CatalogChange] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "sent": self.sent, "unchanged": self.unchanged,
                "rejected": self.rejected, "reasons": dict(sorted(self.reasons.items())),
                "topic": self.topic, "dead_letter_topic": self.dead_letter_topic,
                "sent_ids": self.sent_ids, "changes": [c.to_dict() for c in self.changes]}

    def render(self) -> str:
        lines = [f"sent {self.sent} of {self.read} products to {self.topic} "
                 f"({self.unchanged} unchanged)",
                 f"rejected {self.rejected} to {self.dead_letter_topic}"]
        lines += [f"  {reason}: {n}" for reason, n in sorted(self.reasons.items())]
        if self.changes:
            kinds = Counter(c.kind for c in self.changes)
            lines.append("changes: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        return "\n".join(lines)


async def send_catalog(items: Iterable[Decoded], sink: Sink, topics: CatalogTopics, *,
                       source: str, last: Mapping[str, CatalogRecord] | None = None,
                       on_reject: Callable[[str], None] | None = None) -> CatalogSummary:
    """Dead-letter the rejections (``on_reject`` learns each reason), then
    send the valid records keyed by product id: with ``last`` (the topic's
    current version) only those that differ from it, else all of them."""
    summary = CatalogSummary(topic=topics.catalog, dead_letter_topic=topics.dead_letters)
    valid: list[CatalogRecord] = []
    for where, item, raw in items:
        if isinstance(item, EventRejected):
            await sink.send(topics.dead_letters, None,
                            dead_letter_value(item.reason, item.detail, source, raw, where=where))
            summary.rejected += 1
            summary.reasons[item.reason] += 1
            if on_reject is not None:
                on_reject(item.reason)
        else:
            valid.append(item)
    summary.read = len(valid)
    to_send = changed_records(last, valid) if last is not None else valid
    summary.unchanged = len(changed_records({}, valid)) - len(to_send) if last is not None else 0
    for record in to_send:
        await sink.send(topics.catalog, record.product_id.encode(), record.to_json())
        summary.sent_ids.append(record.product_id)
        if last is not None:
            summary.changes.extend(catalog_changes(last.get(record.product_id), record))
    summary.sent = len(to_send)
    await sink.flush()
    return summary


async def ensure_catalog_topics(bootstrap: str, topics: CatalogTopics,
                                partitions: int = DEFAULT_PARTITIONS,
                                replication: int | None = None) -> None:
    """The catalog topic compacted, the dead-letter topic as every other."""
    await ensure_topics(bootstrap, [topics.catalog, topics.dead_letters], partitions,
                        configs={topics.catalog: COMPACTED}, replication=replication)


async def read_last(bootstrap: str, topic: str, max_id_chars: int = DEFAULT_MAX_ID_CHARS,
                    timeout_s: float = 60.0) -> dict[str, CatalogRecord]:
    """The catalog's last version: the latest record of each key on the
    topic (a tombstone removes the product). A value that does not decode
    was never written by us; it is skipped, as compaction will skip it."""
    from agents.export import topic_records

    last: dict[str, CatalogRecord] = {}
    async for record in topic_records(bootstrap, topic, timeout_s):
        key = (record.key or b"").decode("utf-8", "replace")
        if record.value is None:
            last.pop(key, None)
            continue
        try:
            found = decode_catalog_record(record.value, max_id_chars)
        except EventRejected:
            continue
        last[found.product_id] = found
    return last


async def publish_catalog(bootstrap: str, items: Iterable[Decoded], topics: CatalogTopics, *,
                          source: str, diff: bool, max_id_chars: int = DEFAULT_MAX_ID_CHARS,
                          partitions: int = DEFAULT_PARTITIONS,
                          replication: int | None = None) -> CatalogSummary:
    """Create the topics if needed and send ``items`` (``diff``: only what
    changed since the topic's last version)."""
    await ensure_catalog_topics(bootstrap, topics, partitions, replication)
    last = await read_last(bootstrap, topics.catalog, max_id_chars) if diff else None
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        return await send_catalog(items, PipelinedProducer(producer), topics, source=source, last=last)
    finally:
        await producer.stop()
