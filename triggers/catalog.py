"""The catalog change stream's record, its strict decoding, the diff of a
catalog against its last version, and the changes between two versions of
one product (docs/catalog.md, docs/semantics-notes.md "Catalog changes").

Pure: records in, records and change events out. The Kafka side (the
compacted ``PREFIX.catalog`` topic, dead letters) is :mod:`agents.catalog_stream`.

A record (one JSON object, keyed by ``product_id`` on the topic)::

    {"v": 1, "product_id": "p1", "price_cents": 1999, "category": "shoes",
     "is_new": false, "name": "Trail shoe",
     "variants": {"42": {"stock": 3, "available": true}}}

``v`` and ``product_id`` and ``price_cents`` are required; every other field
is optional; any other field is refused (``unknown_field``), so a typo
("prize_cents") is dead-lettered instead of silently read as a default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from triggers.errors import EventRejected
from triggers.events import (
    DEFAULT_MAX_ID_CHARS,
    REASON_INVALID_JSON,
    REASON_MISSING_FIELD,
    REASON_NOT_OBJECT,
    REASON_TOO_LONG,
    REASON_WRONG_TYPE,
)

CATALOG_VERSION = 1  # the record format's version (field "v")
MAX_NAME_CHARS = 1000
# Stable reason codes of a refused catalog record (dead letters, metric labels),
# beside the event decoder's (invalid_json, not_object, missing_field, wrong_type, too_long).
REASON_NEGATIVE_PRICE = "negative_price"
REASON_NEGATIVE_STOCK = "negative_stock"
REASON_UNKNOWN_FIELD = "unknown_field"
REASON_BAD_VERSION = "bad_version"
CATALOG_REASONS = (REASON_INVALID_JSON, REASON_NOT_OBJECT, REASON_MISSING_FIELD,
                   REASON_WRONG_TYPE, REASON_TOO_LONG, REASON_NEGATIVE_PRICE,
                   REASON_NEGATIVE_STOCK, REASON_UNKNOWN_FIELD, REASON_BAD_VERSION)

_FIELDS = frozenset({"v", "product_id", "price_cents", "category", "is_new", "name",
                     "variants"})
_VARIANT_FIELDS = frozenset({"stock", "available"})

# Change kinds (docs/semantics-notes.md, "Catalog changes").
BACK_IN_STOCK = "back_in_stock"
PRICE_DROP = "price_drop"
NEW_ARRIVAL = "new_arrival"
CHANGE_KINDS = (BACK_IN_STOCK, PRICE_DROP, NEW_ARRIVAL)


@dataclass(frozen=True, slots=True)
class Variant:
    stock: int = 0
    available: bool = True

    @property
    def in_stock(self) -> bool:
        """Buyable now: marked available and at least one unit in stock."""
        return self.available and self.stock > 0


@dataclass(frozen=True, slots=True)
class CatalogRecord:
    """One product's current state. ``variants`` is sorted by variant id, so
    two records of the same state are equal (and encode to the same bytes)."""

    product_id: str
    price_cents: int
    category: str = ""
    is_new: bool = False
    name: str = ""
    variants: tuple[tuple[str, Variant], ...] = ()

    def variant_map(self) -> dict[str, Variant]:
        return dict(self.variants)

    def to_dict(self) -> dict[str, Any]:
        return {"v": CATALOG_VERSION, "product_id": self.product_id,
                "price_cents": self.price_cents, "category": self.category,
                "is_new": self.is_new, "name": self.name,
                "variants": {vid: {"stock": v.stock, "available": v.available}
                             for vid, v in self.variants}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def decode_catalog_record(raw: bytes | str,
                          max_id_chars: int = DEFAULT_MAX_ID_CHARS) -> CatalogRecord:
    """One JSON object as a record, or :class:`EventRejected` with its reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventRejected(REASON_INVALID_JSON, f"not JSON: {exc}") from None
    return catalog_record_from_mapping(obj, max_id_chars)


def catalog_record_from_mapping(obj: Any, max_id_chars: int = DEFAULT_MAX_ID_CHARS
                                ) -> CatalogRecord:
    """Strict: exact types (no "12" for 12, no 1 for true), no unknown field,
    no negative price or stock, ids (product, variant, category) at most
    ``max_id_chars`` characters (``engine.max_id_chars``)."""
    if not isinstance(obj, dict):
        raise EventRejected(REASON_NOT_OBJECT, "a catalog record is a JSON object")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise EventRejected(REASON_UNKNOWN_FIELD, f"unknown field(s) {', '.join(unknown)}; "
                            f"a record has {', '.join(sorted(_FIELDS))}")
    for name in ("v", "product_id", "price_cents"):
        if name not in obj:
            raise EventRejected(REASON_MISSING_FIELD, f"{name} is required")
    if type(obj["v"]) is not int or obj["v"] != CATALOG_VERSION:
        raise EventRejected(REASON_BAD_VERSION, f"v is {obj['v']!r}; this version reads "
                            f"v={CATALOG_VERSION}")
    pid = _id(obj["product_id"], "product_id", max_id_chars)
    if not pid:
        raise EventRejected(REASON_MISSING_FIELD, "product_id is empty")
    price = obj["price_cents"]
    if type(price) is not int:
        raise EventRejected(REASON_WRONG_TYPE, "price_cents must be an integer (cents)")
    if price < 0:
        raise EventRejected(REASON_NEGATIVE_PRICE, f"price_cents is {price}")
    category = _id(obj.get("category", ""), "category", max_id_chars)
    is_new = obj.get("is_new", False)
    if type(is_new) is not bool:
        raise EventRejected(REASON_WRONG_TYPE, "is_new must be true or false")
    name = obj.get("name", "")
    if type(name) is not str:
        raise EventRejected(REASON_WRONG_TYPE, "name must be a string")
    if len(name) > MAX_NAME_CHARS:
        raise EventRejected(REASON_TOO_LONG, f"name has {len(name)} characters, the limit "
                            f"is {MAX_NAME_CHARS}")
    return CatalogRecord(pid, price, category, is_new, name,
                         _variants(obj.get("variants", {}), max_id_chars))


def _id(value: Any, name: str, limit: int) -> str:
    if type(value) is not str:
        raise EventRejected(REASON_WRONG_TYPE, f"{name} must be a string")
    if len(value) > limit:
        raise EventRejected(REASON_TOO_LONG,
                            f"{name} has {len(value)} characters, the limit is {limit}")
    return value


def _variants(value: Any, limit: int) -> tuple[tuple[str, Variant], ...]:
    if not isinstance(value, dict):
        raise EventRejected(REASON_WRONG_TYPE, "variants must be an object of variant id -> "
                            '{"stock": n, "available": bool}')
    out = []
    for vid, spec in value.items():
        _id(vid, "a variant id", limit)
        if not isinstance(spec, dict):
            raise EventRejected(REASON_WRONG_TYPE, f"variant {vid!r} must be an object")
        unknown = sorted(set(spec) - _VARIANT_FIELDS)
        if unknown:
            raise EventRejected(REASON_UNKNOWN_FIELD, f"variant {vid!r}: unknown field(s) "
                                f"{', '.join(unknown)}; a variant has stock, available")
        stock, available = spec.get("stock", 0), spec.get("available", True)
        if type(stock) is not int:
            raise EventRejected(REASON_WRONG_TYPE, f"variant {vid!r}: stock must be an integer")
        if stock < 0:
            raise EventRejected(REASON_NEGATIVE_STOCK, f"variant {vid!r}: stock is {stock}")
        if type(available) is not bool:
            raise EventRejected(REASON_WRONG_TYPE,
                                f"variant {vid!r}: available must be true or false")
        out.append((vid, Variant(stock, available)))
    return tuple(sorted(out, key=lambda item: item[0]))


def changed_records(last: Mapping[str, CatalogRecord],
                    records: Iterable[CatalogRecord]) -> list[CatalogRecord]:
    """The records of ``records`` that differ from ``last`` (the stream's
    current version, by product id), in first-seen order; a product given
    twice counts as its last record. A product in ``last`` but not in
    ``records`` is not touched (no deletion: a catalog file may be partial)."""
    newest: dict[str, CatalogRecord] = {}
    for record in records:
        newest[record.product_id] = record
    return [r for pid, r in newest.items() if last.get(pid) != r]


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """One change event of a product (docs/semantics-notes.md, "Catalog changes")."""

    kind: str
    product_id: str
    variant: str = ""  # back_in_stock: the variant now in stock
    old_price_cents: int = 0  # price_drop
    new_price_cents: int = 0  # price_drop
    drop_bp: int = 0  # price_drop: (old - new) / old in basis points, rounded down
    category: str = ""  # new_arrival (and the others: the new record's)

    @property
    def drop_percent(self) -> float:
        return self.drop_bp / 100

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "product_id": self.product_id,
                               "category": self.category}
        if self.kind == BACK_IN_STOCK:
            out["variant"] = self.variant
        elif self.kind == PRICE_DROP:
            out.update(old_price_cents=self.old_price_cents,
                       new_price_cents=self.new_price_cents, drop_bp=self.drop_bp)
        return out


def catalog_changes(previous: CatalogRecord | None,
                    current: CatalogRecord) -> list[CatalogChange]:
    """The changes from ``previous`` (None: the product was never seen) to
    ``current``: ``back_in_stock`` per variant (sorted by id), then
    ``price_drop``, then ``new_arrival``. A first record names only
    ``new_arrival`` (nothing was out of stock or dearer before it)."""
    if previous is not None and previous.product_id != current.product_id:
        raise ValueError("the two records are of different products")
    pid, category = current.product_id, current.category
    changes: list[CatalogChange] = []
    if previous is not None:
        before = previous.variant_map()
        for vid, variant in current.variants:
            old = before.get(vid)
            if old is not None and not old.in_stock and variant.in_stock:
                changes.append(CatalogChange(BACK_IN_STOCK, pid, variant=vid, category=category))
        old_price, new_price = previous.price_cents, current.price_cents
        if new_price < old_price:
            changes.append(CatalogChange(PRICE_DROP, pid, old_price_cents=old_price,
                                         new_price_cents=new_price,
                                         drop_bp=(old_price - new_price) * 10_000 // old_price,
                                         category=category))
    if current.is_new and (previous is None or not previous.is_new):
        changes.append(CatalogChange(NEW_ARRIVAL, pid, category=category))
    return changes
