"""A catalog-plus-clickstream stream built from the shared rees46 sample, the
catalog scenes' config for it, and a brute-force reference of the catalog
scenes (docs/semantics-notes.md, "Catalog scenes") that replay and the
worker are checked against.

The clickstream is the sample as JSONL, with, for the three most viewed
products, a wanted variant on each view (from the user id), a lead score on
each view, and a ``notify_me`` after every view of a user whose id ends in 7.
The history gives the six most viewed products a record before the first
event, then restocks, price drops and new arrivals during and after it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from scenetrigger.runtime.sources import read_rees46
from tests.paths import REES46_SAMPLE
from triggers.catalog import (
    BACK_IN_STOCK,
    NEW_ARRIVAL,
    PRICE_DROP,
    CatalogChange,
    CatalogRecord,
    catalog_changes,
    catalog_record_from_mapping,
)
from triggers.events import Event

START = 1569888000000  # 2019-10-01 00:00 UTC, the sample's first second
MIN, HOUR = 60_000, 3_600_000
WITHIN, VIEWS = 86_400_000, 2
CONFIG = """\
engine: {max_triggers_per_user: null}
catalog_interest: {within: 1d, views: 2}
scenes:
  restock: {kind: back_in_stock, stock_factor: 2}
  restock_wanted: {kind: back_in_stock, variant_only: true}
  cheaper: {kind: price_drop, min_percent: 10, digest: 1h}
  cheaper_by_amount: {kind: price_drop, min_amount_cents: 500}
  arrivals: {kind: new_arrival, digest: 30m}
"""


def sample_events() -> list[dict[str, Any]]:
    with REES46_SAMPLE.open("rb") as lines:
        events = [dict(item.fields) for _, item in read_rees46(lines) if type(item) is Event]
    top = [p for p, _ in Counter(e["product_id"] for e in events).most_common(6)]
    out = []
    for event in events:
        event.pop("session_id")
        out.append(event)
        if event["product_id"] in top[:3] and event["type"] == "view":
            user = event["user_id"]
            event["variant"] = "a" if int(user) % 2 else "b"
            event["lead_score"] = int(user) % 5
            if user.endswith("7"):
                out.append({"user_id": user, "ts": event["ts"], "type": "notify_me",
                            "product_id": event["product_id"]})
    return out


def _cents(price: str) -> int:
    return int(Decimal(price) * 100)


def sample_history(events: list[dict[str, Any]], shift: int = 0) -> list[dict[str, Any]]:
    """``{"ts", "record"}`` lines (the history replay reads), ``shift`` ms later."""
    top = [p for p, _ in Counter(e["product_id"] for e in events).most_common(6)]
    price = {e["product_id"]: _cents(e["price"]) for e in events if "price" in e}
    cats = {e["product_id"]: e.get("category", "") for e in events}

    def rec(pid: str, cents: int, *, new: bool = False, category: str | None = None,
            **stock: int) -> dict[str, Any]:
        return {"v": 1, "product_id": pid, "price_cents": cents, "is_new": new,
                "category": cats.get(pid, "") if category is None else category,
                "variants": {k: {"stock": n} for k, n in stock.items()}}

    p1, p2, p3, p4, p5, p6 = top
    lines = [(START - 1, rec(p, price[p], a=0, b=5)) for p in (p1, p2, p3)]
    lines += [(START - 1, rec(p, price[p], a=10)) for p in (p4, p5, p6)]
    lines += [
        (START + HOUR, rec(p1, price[p1], a=3, b=5)),
        (START + HOUR, rec(p2, price[p2], a=1, b=5)),
        (START + HOUR, rec(p4, price[p4] * 8 // 10, a=10)),
        (START + HOUR, rec(p5, price[p5] * 95 // 100, a=10)),
        (START + HOUR, rec(p6, price[p6] - 300, a=10)),
        (START + HOUR, rec("new-1", 9900, new=True, category="electronics.clocks", a=1)),
        (START + HOUR + 20 * MIN, rec("new-2", 4900, new=True, category="electronics.clocks")),
        (START + HOUR + 15 * MIN, rec(p4, price[p4] * 7 // 10, a=10)),
        (START + HOUR + 15 * MIN, rec(p1, price[p1], a=5, b=5)),
        (START + HOUR + 15 * MIN, rec(p3, price[p3], a=2, b=5)),
        (START + HOUR + 45 * MIN, rec(p2, price[p2], a=0, b=5)),
        (START + HOUR + 45 * MIN, rec(p6, price[p6] * 9 // 10, a=10)),
        (START + 2 * HOUR, rec("new-3", 59900, new=True, category="computers.notebook")),
        (START + 2 * HOUR + 10 * MIN, rec(p2, price[p2], a=2, b=5)),
        (START + 2 * HOUR + 10 * MIN, rec(p1, price[p1], a=1, b=5)),
        (START + 3 * HOUR, rec(p5, price[p5] // 2, a=10)),
        (START + 3 * HOUR, rec("new-4", 19900, new=True, category="electronics.smartphone")),
    ]
    lines.sort(key=lambda line: line[0])
    return [{"ts": ts + shift, "record": record} for ts, record in lines]


# -- the brute-force reference -------------------------------------------------

def _key_of(event: dict[str, Any], category: bool) -> str | None:
    value = event.get("category" if category else "product_id")
    return value if isinstance(value, str) and value else None


class _Reference:
    """Every fact recomputed from the raw events read so far."""

    def __init__(self, scenes: dict[str, dict[str, Any]]) -> None:
        self.scenes = scenes
        self.read: list[dict[str, Any]] = []
        self.notified: set[tuple[str, str, str]] = set()  # (scene, change id, user)
        self.open: dict[tuple[str, str], tuple[str, CatalogChange]] = {}  # (product, scene)
        self.sent: list[tuple[str, str, str, int]] = []  # (scene, user, item key, ts)

    def counted(self, key: str, category: bool) -> list[dict[str, Any]]:
        return [e for e in self.read if e["type"] in ("view", "cart", "favorite", "notify_me")
                and _key_of(e, category) == key]

    def interested(self, key: str, category: bool, at: int) -> list[tuple[str, dict[str, Any]]]:
        by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in self.counted(key, category):
            by_user[e["user_id"]].append(e)
        found = []
        for user, evs in by_user.items():
            inside = [e for e in evs if at - WITHIN <= e["ts"] <= at]
            strong = any(e["type"] != "view" for e in inside)
            if not strong and len({e["ts"] for e in inside if e["type"] == "view"}) < VIEWS:
                continue
            newest = max(e["ts"] for e in evs)
            seen = [e for e in evs if "price" in e or "price_cents" in e]
            priced = max(enumerate(seen), key=lambda ie: (ie[1]["ts"], ie[0]), default=None)
            wanted = [e for e in evs if e.get("variant")]
            variant = max(enumerate(wanted), key=lambda ie: (ie[1]["ts"], ie[0]),
                          default=(0, {"variant": ""}))[1]["variant"]
            scores = [e["lead_score"] for e in evs if "lead_score" in e]
            score = float(scores[-1]) if scores else 0.0
            facts = {"price": None if priced is None else _cents(priced[1]["price"]),
                     "variant": variant, "score": score}
            rank = (-score, 0 if any(e["type"] != "view" for e in evs) else 1,
                    -newest, user)
            found.append((rank, user, facts))
        return [(user, facts) for _, user, facts in sorted(found)]

    def wanted(self, scene: dict[str, Any], change: CatalogChange, facts: dict[str, Any]) -> bool:
        if change.kind == BACK_IN_STOCK:
            return not scene.get("variant_only") or facts["variant"] in ("", change.variant)
        if change.kind == PRICE_DROP:
            seen = change.old_price_cents if facts["price"] is None else facts["price"]
            new = change.new_price_cents
            pct, amount = scene.get("min_percent"), scene.get("min_amount_cents")
            return new < seen and (pct is None or (seen - new) * 100 >= pct * seen) and (
                amount is None or seen - new >= amount)
        return True

    def release(self, name: str, change: CatalogChange, cid: str, ts: int,
                record: CatalogRecord | None) -> bool:
        scene = self.scenes[name]
        limit = None
        if scene.get("stock_factor") and record is not None and record.variants:
            if change.kind == BACK_IN_STOCK:
                stock = record.variant_map()[change.variant].stock
            else:
                stock = sum(v.stock for _, v in record.variants if v.in_stock)
            limit = int(stock * scene["stock_factor"])
        arrival = change.kind == NEW_ARRIVAL
        key = change.category if arrival else change.product_id
        sent = 0
        for user, facts in self.interested(key, arrival, ts):
            if (name, cid, user) in self.notified or not self.wanted(scene, change, facts):
                continue
            if limit is not None and sent >= limit:
                return True
            self.notified.add((name, cid, user))
            self.sent.append((name, user, change.product_id, ts))
            sent += 1
        return False

    def on_record(self, previous: CatalogRecord | None, record: CatalogRecord, ts: int) -> None:
        for (pid, name), (cid, change) in list(self.open.items()):
            if pid != record.product_id:
                continue
            variant = record.variant_map().get(change.variant)
            holds = (variant is not None and variant.in_stock if change.kind == BACK_IN_STOCK
                     else record.price_cents <= change.new_price_cents)
            if not holds or not self.release(name, change, cid, ts, record):
                del self.open[(pid, name)]
        for change in catalog_changes(previous, record):
            for name, scene in self.scenes.items():
                if scene["kind"] != change.kind:
                    continue
                cid = f"{name}|{change.kind}|{change.product_id}|{change.variant}|{ts}"
                self.open.pop((change.product_id, name), None)
                if self.release(name, change, cid, ts, record) and change.kind != NEW_ARRIVAL:
                    self.open[(change.product_id, name)] = (cid, change)


def reference(events: Iterable[dict[str, Any]], history: list[dict[str, Any]],
              scenes: dict[str, dict[str, Any]]) -> list[tuple[str, str, str | None, int]]:
    """The catalog scenes' triggers ``(scene, user, key, ts)``, sorted, with
    every digest fired (the clock moved past the last deadline)."""
    ref = _Reference(scenes)
    last: dict[str, CatalogRecord] = {}
    timed = sorted(history, key=lambda line: line["ts"])
    index = 0

    def apply(line: dict[str, Any]) -> None:
        record = catalog_record_from_mapping(line["record"])
        ref.on_record(last.get(record.product_id), record, line["ts"])
        last[record.product_id] = record

    for event in events:
        while index < len(timed) and timed[index]["ts"] < event["ts"]:
            apply(timed[index])
            index += 1
        ref.read.append(event)
    for line in timed[index:]:
        apply(line)
    out: list[tuple[str, str, str | None, int]] = []
    items: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for name, user, item, ts in ref.sent:
        items[(name, user)].append((ts, item))
    for (name, user), got in items.items():
        digest = scenes[name].get("digest_ms")
        taken: dict[str, int] = {}
        fresh = []
        for ts, item in got:  # the same change twice is taken once
            if taken.get(item, -1) < ts:
                taken[item] = ts
                fresh.append((ts, item))
        if digest is None:
            out += [(name, user, item, ts) for ts, item in fresh]
            continue
        while fresh:
            deadline = fresh[0][0] + digest
            group = [f for f in fresh if f[0] <= deadline]
            fresh = [f for f in fresh if f[0] > deadline]
            newest: dict[str, int] = {}
            for ts, item in group:
                newest[item] = ts
            keys = [k for _, k in sorted((t, k) for k, t in newest.items())]
            out.append((name, user, "[" + ",".join(f'"{k}"' for k in keys) + "]", deadline))
    return sorted(out)


SCENES = {
    "restock": {"kind": BACK_IN_STOCK, "stock_factor": 2},
    "restock_wanted": {"kind": BACK_IN_STOCK, "variant_only": True},
    "cheaper": {"kind": PRICE_DROP, "min_percent": 10, "digest_ms": HOUR},
    "cheaper_by_amount": {"kind": PRICE_DROP, "min_amount_cents": 500},
    "arrivals": {"kind": NEW_ARRIVAL, "digest_ms": 30 * MIN},
}
