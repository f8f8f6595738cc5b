"""The catalog side of the join: a product's change, matched against the
interest kept for it, becomes one fan-out event per interested user
(docs/semantics-notes.md, "Catalog scenes").

Pure: catalog records (with their time) and events in, fan-out events out.
A fan-out event is an ordinary user event (keyed by its ``user_id`` on the
events topic) of type ``catalog_change``; the user's side then applies the
scene (:mod:`triggers.kinds.catalog`) with its caps, consent and content.

Each fan-out event carries ``change_id`` (the scene, the change and the
record time it happened at) and ``event_id``, the first 32 hex digits of
``sha256(change_id + "\\n" + user_id)``: the same change sent twice to a user
(a worker killed mid-fan-out redoes it) has the same id, and the user's
side takes it once.

Stock-aware fan-out (a scene's ``stock_factor``): a change notifies at most
``floor(stock x factor)`` users not yet notified of it, likeliest buyers
first (:meth:`triggers.interest.Interest.rank`); each later record of the
product in which the change still holds (the variant still in stock, the
price still at most the dropped price) releases the next ``floor(stock x
factor)``; a record in which it no longer holds ends it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from triggers.catalog import (
    BACK_IN_STOCK,
    CHANGE_KINDS,
    NEW_ARRIVAL,
    PRICE_DROP,
    CatalogChange,
    CatalogRecord,
    catalog_changes,
    catalog_record_from_mapping,
)
from triggers.interest import Interest, InterestBook, category_key, product_key
from triggers.kinds.catalog import CatalogScene

FANOUT_TYPE = "catalog_change"
__all__ = ["CHANGE_KINDS", "FANOUT_TYPE", "CatalogSide", "ProductMeta", "change_id",
           "event_id", "fanout_event"]


def event_id(change_id: str, user_id: str) -> str:
    """The fan-out event's idempotent id (documented formula)."""
    return hashlib.sha256(f"{change_id}\n{user_id}".encode()).hexdigest()[:32]


def change_id(scene: str, change: CatalogChange, ts: int) -> str:
    return f"{scene}|{change.kind}|{change.product_id}|{change.variant}|{ts}"


@dataclass(slots=True)
class ProductMeta:
    """What the catalog side keeps per product: its last record and, per
    scene, the change still being released (stock-aware fan-out); ``ts``
    and ``undo`` (the record and open changes before it) let the same record
    taken again (a redone fan-out after a crash) be done again in full."""

    record: CatalogRecord | None = None
    open: dict[str, tuple[str, CatalogChange]] = field(default_factory=dict)
    ts: int | None = None
    undo: tuple[CatalogRecord | None, dict[str, tuple[str, CatalogChange]]] | None = None


class MetaStore(Protocol):
    def get(self, product_id: str) -> ProductMeta | None: ...

    def put(self, product_id: str, meta: ProductMeta) -> None: ...


class MemoryMeta:
    def __init__(self) -> None:
        self._metas: dict[str, ProductMeta] = {}

    def get(self, product_id: str) -> ProductMeta | None:
        return self._metas.get(product_id)

    def put(self, product_id: str, meta: ProductMeta) -> None:
        self._metas[product_id] = meta


def catalog_scenes(scenes: Sequence[Any]) -> tuple[CatalogScene, ...]:
    """The scenes of the three catalog kinds, in config order."""
    return tuple(s for s in scenes if isinstance(s, CatalogScene))


def stock_of(record: CatalogRecord, change: CatalogChange) -> int | None:
    """The stock a change's fan-out is bounded by: the variant's for
    back in stock, else the units of every variant in stock; None when the
    record has no variants (no stock known: no bound)."""
    if not record.variants:
        return None
    if change.kind == BACK_IN_STOCK:
        variant = record.variant_map().get(change.variant)
        return variant.stock if variant is not None and variant.in_stock else 0
    return sum(v.stock for _, v in record.variants if v.in_stock)


def still_holds(change: CatalogChange, record: CatalogRecord) -> bool:
    """Whether a later record keeps an open change worth releasing."""
    if change.kind == BACK_IN_STOCK:
        variant = record.variant_map().get(change.variant)
        return variant is not None and variant.in_stock
    if change.kind == PRICE_DROP:
        return record.price_cents <= change.new_price_cents
    return record.is_new


def matches(scene: CatalogScene, change: CatalogChange, entry: Interest) -> bool:
    """Whether this user's interest makes the change worth a message."""
    if change.kind == BACK_IN_STOCK:
        return not scene.variant_only or entry.variant in ("", change.variant)
    if change.kind == PRICE_DROP:
        seen = change.old_price_cents if entry.price_cents is None else entry.price_cents
        new = change.new_price_cents
        if new >= seen:
            return False
        if scene.min_drop_bp is not None and (seen - new) * 10_000 < scene.min_drop_bp * seen:
            return False
        return scene.min_drop_cents is None or seen - new >= scene.min_drop_cents
    return True


class CatalogSide:
    """Interest in, catalog records in, fan-out events out. ``scenes``: the
    config's scenes (only the catalog kinds are read)."""

    def __init__(self, scenes: Sequence[Any], book: InterestBook,
                 metas: MetaStore | None = None) -> None:
        self.scenes = catalog_scenes(scenes)
        self.book = book
        self.metas: MetaStore = metas if metas is not None else MemoryMeta()
        self.fanned = 0  # fan-out events made

    def observe(self, user_id: str, ts: int, fields: Any) -> list[str]:
        """An event's interest (fan-out events themselves are not interest)."""
        if fields.get("type") == FANOUT_TYPE:
            return []
        return self.book.observe(user_id, ts, fields)

    def on_record(self, record: CatalogRecord, ts: int
                  ) -> tuple[list[dict[str, Any]], list[CatalogChange]]:
        """A product's new record at ``ts``: the fan-out events of its
        product-keyed scenes, and its ``new_arrival`` changes, which fan out
        from the category's interest (:meth:`on_category_change`, on the
        category's partition)."""
        meta = self.metas.get(record.product_id) or ProductMeta()
        if meta.ts == ts and meta.record == record and meta.undo is not None:
            # Taken again (at least once): from the state before it, so the
            # users it reached are sent the same events again (their side
            # takes each once) and the rest are reached now.
            meta.record, meta.open = meta.undo[0], dict(meta.undo[1])
        meta.undo, meta.ts = (meta.record, dict(meta.open)), ts
        changes = catalog_changes(meta.record, record)
        out: list[dict[str, Any]] = []
        by_name = {s.name: s for s in self.scenes}
        for name, (cid, change) in list(meta.open.items()):  # waves of earlier changes
            scene = by_name.get(name)
            if scene is None or not still_holds(change, record):
                del meta.open[name]
                continue
            if not self._release(scene, change, cid, ts, stock_of(record, change), out):
                del meta.open[name]
        arrivals = []
        for change in changes:
            if change.kind == NEW_ARRIVAL:
                if any(s.kind == NEW_ARRIVAL for s in self.scenes):
                    arrivals.append(change)
                continue
            for scene in self.scenes:
                if scene.kind != change.kind:
                    continue
                cid = change_id(scene.name, change, ts)
                meta.open.pop(scene.name, None)
                if self._release(scene, change, cid, ts, stock_of(record, change), out):
                    meta.open[scene.name] = (cid, change)
        meta.record = record
        self.metas.put(record.product_id, meta)
        return out, arrivals

    def on_category_change(self, change: CatalogChange, ts: int) -> list[dict[str, Any]]:
        """A new arrival at ``ts``: one event per browser of its category."""
        out: list[dict[str, Any]] = []
        for scene in self.scenes:
            if scene.kind == NEW_ARRIVAL:
                self._release(scene, change, change_id(scene.name, change, ts), ts, None, out)
        return out

    def _release(self, scene: CatalogScene, change: CatalogChange, cid: str, ts: int,
                 stock: int | None, out: list[dict[str, Any]]) -> bool:
        """Send the change to the next users (all, or the stock's share);
        True when some are left waiting for stock."""
        key = (category_key(change.category) if change.kind == NEW_ARRIVAL
               else product_key(change.product_id))
        limit = None
        if scene.stock_factor is not None and stock is not None:
            limit = int(stock * scene.stock_factor)
        sent = 0
        store = self.book.store
        for user, entry in self.book.interested(key, ts):
            mark = entry.notified.get(scene.name)
            # Sent by an earlier record; one sent by this record's time is a
            # redone fan-out's: sent again.
            if (mark is not None and mark[0] == cid and mark[1] < ts) or not matches(
                    scene, change, entry):
                continue
            if limit is not None and sent >= limit:
                return True
            entry.notified[scene.name] = (cid, ts)
            store.put(key, user, entry)
            out.append(fanout_event(scene.name, change, cid, user, ts, entry))
            sent += 1
        self.fanned += sent
        return False


def fanout_event(scene: str, change: CatalogChange, cid: str, user_id: str, ts: int,
                 entry: Interest) -> dict[str, Any]:
    """One user's event of a change (JSON-ready; its ``type`` is ``catalog_change``)."""
    event: dict[str, Any] = {"user_id": user_id, "ts": ts, "type": FANOUT_TYPE,
                             "scene": scene, "change": change.kind,
                             "product_id": change.product_id, "category": change.category}
    if change.kind == BACK_IN_STOCK:
        event["variant"] = change.variant
    elif change.kind == PRICE_DROP:
        event.update(old_price_cents=change.old_price_cents,
                     new_price_cents=change.new_price_cents)
        if entry.price_cents is not None:
            event["price_seen_cents"] = entry.price_cents
    event.update(change_id=cid, event_id=event_id(cid, user_id))
    return event




def meta_to_wire(meta: ProductMeta) -> bytes:
    """A product's meta as stored (orjson; versioned by its first element)."""
    undo = None if meta.undo is None else [_record_wire(meta.undo[0]), _open_wire(meta.undo[1])]
    return orjson.dumps([1, _record_wire(meta.record), _open_wire(meta.open), meta.ts, undo])


def meta_from_wire(raw: bytes) -> ProductMeta:
    _, record, opened, ts, undo = orjson.loads(raw)
    return ProductMeta(_record(record), _open(opened), ts,
                       None if undo is None else (_record(undo[0]), _open(undo[1])))


def _record_wire(record: CatalogRecord | None) -> dict[str, Any] | None:
    return None if record is None else record.to_dict()


def _record(wire: dict[str, Any] | None) -> CatalogRecord | None:
    return None if wire is None else catalog_record_from_mapping(wire)


def _open_wire(opened: dict[str, tuple[str, CatalogChange]]) -> dict[str, Any]:
    return {name: [cid, _change_wire(c)] for name, (cid, c) in opened.items()}


def _open(wire: dict[str, Any]) -> dict[str, tuple[str, CatalogChange]]:
    return {name: (cid, CatalogChange(*change)) for name, (cid, change) in wire.items()}


def _change_wire(change: CatalogChange) -> list[Any]:
    return [change.kind, change.product_id, change.variant, change.old_price_cents,
            change.new_price_cents, change.drop_bp, change.category]


def change_to_wire(change: CatalogChange) -> list[Any]:
    """A change sent on to its category's partition (new arrivals)."""
    return _change_wire(change)


def change_from_wire(wire: list[Any]) -> CatalogChange:
    return CatalogChange(*wire)
