"""The catalog stream's sending rules without a broker: rejects are
dead-lettered with reason and input, valid records keyed by product id,
the diff sends only what changed (a counting sink behind the Sink protocol)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agents.catalog_stream import CatalogTopics, decode_items, decode_lines, send_catalog
from triggers.catalog import CatalogRecord, decode_catalog_record
from triggers.errors import SceneTriggerError


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = 0

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None = None) -> Any:
        self.sent.append((topic, key, value))
        return None

    async def flush(self) -> None:
        self.flushed += 1


TOPICS = CatalogTopics("cat", "dl")
LINES = [
    b'{"v":1,"product_id":"a","price_cents":100}\n',
    b"\n",
    b'{"v":1,"product_id":"b","price_cents":-5}\n',
    b'{"v":1,"product_id":"c","price_cents":300,"colour":"red"}\n',
    b'{"v":1,"product_id":"' + b"x" * 30 + b'","price_cents":1}\n',
    b'{"v":1,"product_id":"d","price_cents":400}\n',
]


async def test_rejects_go_to_dead_letters_with_reason_and_line() -> None:
    sink = ListSink()
    seen: list[str] = []
    summary = await send_catalog(decode_lines(LINES, max_id_chars=20), sink, TOPICS,
                                 source="catalog:f.jsonl", on_reject=seen.append)
    dead = [orjson.loads(v) for t, _, v in sink.sent if t == "dl"]
    assert [(d["reason"], d["where"], d["source"]) for d in dead] == [
        ("negative_price", 3, "catalog:f.jsonl"), ("unknown_field", 4, "catalog:f.jsonl"),
        ("too_long", 5, "catalog:f.jsonl")]
    assert dead[0]["raw"] == LINES[2].decode().rstrip("\n")
    assert seen == ["negative_price", "unknown_field", "too_long"]
    sent = [(k, decode_catalog_record(v)) for t, k, v in sink.sent if t == "cat"]
    assert sent == [(b"a", CatalogRecord("a", 100)), (b"d", CatalogRecord("d", 400))]
    assert (summary.read, summary.sent, summary.rejected) == (2, 2, 3)
    assert summary.reasons == {"negative_price": 1, "unknown_field": 1, "too_long": 1}
    assert sink.flushed == 1


async def test_with_the_last_version_only_changes_are_sent() -> None:
    sink = ListSink()
    last = {"a": CatalogRecord("a", 100), "d": CatalogRecord("d", 399)}
    summary = await send_catalog(decode_lines(LINES, 20), sink, TOPICS, source="t", last=last)
    assert [k for t, k, _ in sink.sent if t == "cat"] == [b"d"]
    assert (summary.sent, summary.unchanged, summary.sent_ids) == (1, 1, ["d"])
    assert summary.changes == []  # 399 -> 400 is a rise: no change event
    cheaper = await send_catalog(decode_lines(LINES, 20), ListSink(), TOPICS, source="t",
                                 last={"a": CatalogRecord("a", 100), "d": CatalogRecord("d", 500)})
    assert [c.to_dict() for c in cheaper.changes] == [
        {"kind": "price_drop", "product_id": "d", "category": "", "old_price_cents": 500,
         "new_price_cents": 400, "drop_bp": 2000}]
    assert cheaper.render().endswith("changes: price_drop 1")


async def test_request_items_are_indexed() -> None:
    sink = ListSink()
    items = decode_items([{"v": 1, "product_id": "a", "price_cents": 1}, "nope"])
    summary = await send_catalog(items, sink, TOPICS, source="serve:/catalog")
    dead = [orjson.loads(v) for t, _, v in sink.sent if t == "dl"]
    assert [(d["reason"], d["where"], d["raw"]) for d in dead] == [("not_object", 1, '"nope"')]
    assert summary.sent == 1


async def test_an_item_nested_past_what_orjson_writes_is_a_reject_not_an_error() -> None:
    deep = orjson.loads(b"[" * 300 + b"]" * 300)  # parses; orjson.dumps refuses it
    sink = ListSink()
    summary = await send_catalog(decode_items([deep]), sink, TOPICS, source="serve:/catalog")
    dead = [orjson.loads(v) for t, _, v in sink.sent if t == "dl"]
    assert [d["reason"] for d in dead] == ["too_deep"] and summary.sent == 0


def test_topic_names() -> None:
    assert CatalogTopics.of("shop") == CatalogTopics("shop.catalog", "shop.dead-letters")
    assert CatalogTopics.of(None) == CatalogTopics("scenetrigger-catalog",
                                                   "scenetrigger-deadletter")
    with pytest.raises(SceneTriggerError, match="must differ"):
        CatalogTopics.of("x", "same", "same")
