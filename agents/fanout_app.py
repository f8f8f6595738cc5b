"""The catalog side on Kafka (``scenetrigger fanout``): a Faust app of its
own (group ``APP_ID``, default ``PREFIX-fanout``) beside the workers.

::

  PREFIX.events  --relay (interest events, by interest key)-->  PREFIX.by-product
  PREFIX.catalog --relay (records, by "p|product", with their time)-->  PREFIX.by-product
  PREFIX.by-product --the catalog agent (table "catalog-interest")-->
        PREFIX.events  (one catalog_change event per user, in batched records
                        of the user's partition, as produce writes them)
        PREFIX.by-product  (a new arrival, on to "c|category")

The catalog agent runs :class:`triggers.fanout.CatalogSide` over a table of
one entry per (interest key, user) and one meta per product (last record,
open changes), so a product with 100,000 interested users is 100,000 small
changelog records, not one huge value. Which users a key has is an index in
memory, rebuilt from the table after each recovery. At least once: a worker
killed mid-fan-out redoes the record after a restart and sends the same
events again (same ``event_id``, same time); the user's side takes each once
(:mod:`triggers.kinds.catalog`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from agents.faust_app import new_app
from agents.faust_compat import allow_producer_buffer
from agents.record_batching import encode_batch, partition_for
from agents.settings import WorkerSettings
from agents.topics import dead_letter_record
from triggers.catalog import decode_catalog_record
from triggers.errors import EventRejected
from triggers.events import Event, decode_event_record
from triggers.fanout import (
    FANOUT_TYPE,
    CatalogSide,
    ProductMeta,
    change_from_wire,
    change_to_wire,
    meta_from_wire,
    meta_to_wire,
)
from triggers.interest import Interest, InterestBook, category_key, interest_keys, product_key

log = logging.getLogger(__name__)

TABLE = "catalog-interest"
_SEP = "\x1f"
# The fields of an event the interest side reads (the rest stays behind).
# Faust stops a stream at 100 messages waiting in its producer buffer and
# drains them one wait each (~200 interest events/s measured): a fan-out to
# 100,000 users is that many events plus that many table writes.
PRODUCER_BUFFER = 1_000_000
_KEPT = ("type", "product_id", "category", "price", "price_cents", "variant", "lead_score")


def by_product_topic(prefix: str | None) -> str:
    return f"{prefix}.by-product" if prefix else "scenetrigger-by-product"


@dataclass(frozen=True, slots=True)
class FanoutTopics:
    events: str
    catalog: str
    by_product: str
    dead_letters: str
    event_partitions: int = 4  # of the events topic: where each user's events go
    batch: int = 500  # fan-out events per record (the batched records produce writes)


class FanoutMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.interest = Counter("scenetrigger_interest_events", "events relayed to the "
                                "interest side, per interest key", registry=r)
        self.records = Counter("scenetrigger_fanout_records", "catalog records taken",
                               registry=r)
        self.fanout = Counter("scenetrigger_fanout_events", "catalog_change events sent to "
                              "users", registry=r)
        self.dropped = Counter("scenetrigger_interest_dropped", "interest entries dropped by "
                               "the per-product bound (catalog_interest.max_users)", registry=r)
        self.rejected = Counter("scenetrigger_fanout_rejected", "catalog records refused "
                                "(dead-lettered)", ["reason"], registry=r)


class TableInterest:
    """:class:`triggers.interest.InterestStore` over the Faust table."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.index: dict[str, set[str]] = {}

    @staticmethod
    def _key(key: str, user_id: str) -> bytes:
        return f"e{_SEP}{key}{_SEP}{user_id}".encode()

    def rebuild(self) -> int:
        self.index = {}
        for raw in list(self.table.keys()):
            kind, _, rest = raw.decode().partition(_SEP)
            if kind == "e":
                key, _, user = rest.rpartition(_SEP)
                self.index.setdefault(key, set()).add(user)
        return sum(len(users) for users in self.index.values())

    def get(self, key: str, user_id: str) -> Interest | None:
        raw = self.table.get(self._key(key, user_id))
        return None if raw is None else Interest.from_wire(orjson.loads(raw))

    def put(self, key: str, user_id: str, entry: Interest) -> None:
        self.table[self._key(key, user_id)] = orjson.dumps(entry.to_wire())
        self.index.setdefault(key, set()).add(user_id)

    def delete(self, key: str, user_id: str) -> None:
        self.table.pop(self._key(key, user_id), None)
        users = self.index.get(key)
        if users is not None:
            users.discard(user_id)

    def users(self, key: str) -> Iterator[str]:
        return iter(sorted(self.index.get(key, ())))

    def count(self, key: str) -> int:
        return len(self.index.get(key, ()))


class TableMeta:
    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, product_id: str) -> ProductMeta | None:
        raw = self.table.get(f"m{_SEP}{product_id}".encode())
        return None if raw is None else meta_from_wire(raw)

    def put(self, product_id: str, meta: ProductMeta) -> None:
        self.table[f"m{_SEP}{product_id}".encode()] = meta_to_wire(meta)


class FanoutWorker:
    """The app, its topics, table and three agents."""

    def __init__(self, settings: WorkerSettings, topics: FanoutTopics,
                 metrics: FanoutMetrics | None = None) -> None:
        self.settings = settings
        self.names = topics
        self.metrics = metrics or FanoutMetrics()
        self.app = new_app(settings)
        self.max_id_chars = settings.config.engine.max_id_chars
        app = self.app
        topic = self._topic
        self.events, self.catalog = topic(topics.events), topic(topics.catalog)
        self.by_product, self.dead_letters = topic(topics.by_product), topic(topics.dead_letters)
        self.table = app.Table(TABLE, default=None, partitions=settings.partitions,
                               key_type=bytes, value_type=bytes)
        self.store = TableInterest(self.table)
        self.side = CatalogSide(settings.config.scene_list(),
                                InterestBook(settings.config.catalog_interest.rules(),
                                             self.store), TableMeta(self.table))
        self.table.on_recover(self._on_recovered)
        app.agent(self.events, name="fanout-relay-events")(self._relay_events)
        app.agent(self.catalog, name="fanout-relay-catalog")(self._relay_catalog)
        app.agent(self.by_product, name="fanout-catalog-side", concurrency=1)(self._catalog_side)

    def _topic(self, name: str) -> Any:
        return self.app.topic(name, partitions=self.settings.partitions, key_type=bytes,
                              value_type=bytes, key_serializer="raw", value_serializer="raw",
                              internal=True)

    async def _on_recovered(self) -> None:
        log.info("catalog interest index rebuilt", extra={"entries": self.store.rebuild()})

    # -- the two relays ---------------------------------------------------------

    async def _relay_events(self, stream: Any) -> None:
        """Interest events, one message per interest key (rejections are the
        scene worker's to dead-letter)."""
        book = self.side.book
        send = self.by_product.send_soon
        allow_producer_buffer(self.app, PRODUCER_BUFFER)
        async for value in stream:
            for item in decode_event_record(value or b""):
                if type(item) is not Event:
                    continue
                fields = item.fields
                etype = fields.get("type")
                if etype == FANOUT_TYPE or not book.counts(etype):
                    continue
                slim = {k: fields[k] for k in _KEPT if k in fields}
                payload = orjson.dumps({"e": [item.user_id, item.ts, slim]})
                for key in interest_keys(fields):
                    send(key=key.encode(), value=payload)
                    self.metrics.interest.inc()

    async def _relay_catalog(self, stream: Any) -> None:
        """Catalog records, keyed by product, with the time they were written."""
        send = self.by_product.send_soon
        allow_producer_buffer(self.app, PRODUCER_BUFFER)
        async for event in stream.events():
            message = event.message
            if message.value is None:
                continue  # a tombstone: no deletion yet (docs/catalog.md)
            try:
                record = decode_catalog_record(message.value, self.max_id_chars)
            except EventRejected as exc:
                self.metrics.rejected.labels(exc.reason).inc()
                self.dead_letters.send_soon(key=message.key, value=dead_letter_record(
                    exc.reason, exc.detail, message, round(message.timestamp * 1000)))
                continue
            ts = round(message.timestamp * 1000)
            send(key=product_key(record.product_id).encode(),
                 value=orjson.dumps({"r": record.to_dict(), "ts": ts}))

    # -- the catalog side -------------------------------------------------------

    async def _catalog_side(self, stream: Any) -> None:
        side, metrics = self.side, self.metrics
        send_user = self.events.send_soon
        allow_producer_buffer(self.app, PRODUCER_BUFFER)
        async for event in stream.events():
            key = (event.key or b"").decode()
            obj = orjson.loads(event.value)
            if "e" in obj:
                user, ts, fields = obj["e"]
                dropped = side.book.dropped
                side.book.observe_key(key, user, ts, fields.get("type"), fields)
                if side.book.dropped != dropped:
                    metrics.dropped.inc(side.book.dropped - dropped)
                continue
            ts = obj["ts"]
            if "r" in obj:
                metrics.records.inc()
                out, arrivals = side.on_record(decode_catalog_record(orjson.dumps(obj["r"])), ts)
                for change in arrivals:
                    self.by_product.send_soon(
                        key=category_key(change.category).encode(),
                        value=orjson.dumps({"n": change_to_wire(change), "ts": ts}))
            else:
                out = side.on_category_change(change_from_wire(obj["n"]), ts)
            self._send_batched(send_user, out)
            metrics.fanout.inc(len(out))

    def _send_batched(self, send: Any, out: list[dict[str, Any]]) -> None:
        """The fan-out as the batched records ``produce`` writes: per user
        partition (Kafka's partitioner on the user id), JSON arrays of at most
        ``batch`` events; a record each would cost the worker ~125 us of
        Faust per event (bench/fanout.py)."""
        names = self.names
        groups: dict[int, list[bytes]] = {}
        for fanned in out:
            part = partition_for(fanned["user_id"].encode(), names.event_partitions)
            groups.setdefault(part, []).append(orjson.dumps(fanned))
        for part, values in sorted(groups.items()):
            for start in range(0, len(values), names.batch):
                send(key=None, value=encode_batch(values[start:start + names.batch]),
                     partition=part)
