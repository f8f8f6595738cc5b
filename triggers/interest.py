"""Interest kept per product (and per category): who viewed a product N
times, carted it, favourited it or asked to be told ("notify me"), within a
window; with the price they saw, the variant they wanted and a rank
(docs/semantics-notes.md, "Catalog scenes").

Pure: events in, entries out. The catalog side of the join
(:mod:`triggers.fanout`) reads these entries when a product changes; the
Faust side keeps them in a table (:mod:`agents.fanout_app`), replay in a
:class:`MemoryInterest`.

An entry is keyed by an *interest key*: ``p|PRODUCT`` for a product,
``c|CATEGORY`` for a category (new arrivals are for the category's
browsers), and the user id. Each product (or category) holds at most
``max_users`` entries: past it the lowest ranked go (counted in
``dropped``), down to 7/8 of the cap so the scan is paid once per many.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

PRODUCT = "p|"
CATEGORY = "c|"


def product_key(product_id: str) -> str:
    return PRODUCT + product_id


def category_key(category: str) -> str:
    return CATEGORY + category


@dataclass(frozen=True, slots=True)
class InterestRules:
    """What counts as interest (config ``catalog_interest``).

    ``views``: so many views (events of a type in ``view_types``) within
    ``within_ms``; one event of a type in ``strong_types`` (cart, favourite,
    notify me) is interest on its own. ``max_users`` per product or category.
    """

    within_ms: int = 30 * 86_400_000
    views: int = 2
    view_types: frozenset[str] = frozenset({"view"})
    strong_types: frozenset[str] = frozenset({"cart", "favorite", "notify_me"})
    max_users: int = 10_000

    def __post_init__(self) -> None:
        if self.within_ms < 1 or self.views < 1 or self.max_users < 1:
            raise ValueError("interest needs within >= 1 ms, views >= 1 and max_users >= 1")


@dataclass(slots=True)
class Interest:
    """One user's interest in one product (or category).

    ``views``: the newest view times (at most ``InterestRules.views``, a set
    of times, so a redelivered event counts once); ``strong``: the newest
    cart / favourite / notify-me time; ``price_cents``: the price of the
    newest event that named one; ``score``: the newest ``lead_score`` seen
    (0 without); ``notified``: per scene, the change id last sent and the
    time of the record that sent it.
    """

    last: int
    views: list[int] = field(default_factory=list)
    strong: int | None = None
    price_cents: int | None = None
    variant: str = ""
    score: float = 0.0
    notified: dict[str, tuple[str, int]] = field(default_factory=dict)

    def holds(self, at: int, rules: InterestRules) -> bool:
        """Interest at time ``at``: within ``[at - within, at]``."""
        since = at - rules.within_ms
        if self.strong is not None and since <= self.strong <= at:
            return True
        return sum(1 for t in self.views if since <= t <= at) >= rules.views

    def rank(self, user_id: str) -> tuple[float, int, int, str]:
        """Sort key, likeliest buyer first: lead score, then a strong
        signal (cart, favourite, notify me), then the most recent, then the id."""
        return (-self.score, 0 if self.strong is not None else 1, -self.last, user_id)

    def to_wire(self) -> list[Any]:
        return [self.last, self.views, self.strong, self.price_cents, self.variant, self.score,
                self.notified]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Interest:
        last, views, strong, price, variant, score, notified = wire
        return cls(last, list(views), strong, price, variant, score,
                   {scene: (cid, ts) for scene, (cid, ts) in notified.items()})


class InterestStore(Protocol):
    """Entries by (interest key, user) and the users of a key."""

    def get(self, key: str, user_id: str) -> Interest | None: ...

    def put(self, key: str, user_id: str, entry: Interest) -> None: ...

    def delete(self, key: str, user_id: str) -> None: ...

    def users(self, key: str) -> Iterable[str]: ...

    def count(self, key: str) -> int: ...


class MemoryInterest:
    """Entries in dicts (replay, demo, unit tests)."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, Interest]] = {}

    def get(self, key: str, user_id: str) -> Interest | None:
        users = self._by_key.get(key)
        return None if users is None else users.get(user_id)

    def put(self, key: str, user_id: str, entry: Interest) -> None:
        self._by_key.setdefault(key, {})[user_id] = entry

    def delete(self, key: str, user_id: str) -> None:
        users = self._by_key.get(key)
        if users is not None:
            users.pop(user_id, None)
            if not users:
                del self._by_key[key]

    def users(self, key: str) -> Iterator[str]:
        return iter(list(self._by_key.get(key, ())))

    def count(self, key: str) -> int:
        return len(self._by_key.get(key, ()))


def price_cents_of(fields: Any) -> int | None:
    """The price an event names: ``price_cents`` (an integer), else
    ``price`` (a number or a decimal string, in units: "35.79" is 3579)."""
    cents = fields.get("price_cents")
    if type(cents) is int and cents >= 0:
        return cents
    price = fields.get("price")
    if type(price) in (int, float, str) and type(price) is not bool:
        try:
            value = Decimal(str(price)) * 100
        except InvalidOperation:
            return None
        if value.is_finite() and value >= 0:
            return int(value.to_integral_value())
    return None


def interest_keys(fields: Any) -> list[str]:
    """The interest keys an event feeds: its product and its category."""
    keys = []
    product = fields.get("product_id")
    if type(product) is str and product:
        keys.append(product_key(product))
    elif type(product) is int and type(product) is not bool:
        keys.append(product_key(str(product)))
    category = fields.get("category")
    if type(category) is str and category:
        keys.append(category_key(category))
    return keys


class InterestBook:
    """The interest side: ``observe`` each event (any user, any product)."""

    def __init__(self, rules: InterestRules, store: InterestStore | None = None) -> None:
        self.rules = rules
        self.store: InterestStore = store if store is not None else MemoryInterest()
        self.dropped = 0  # entries evicted by the per-product bound

    def counts(self, etype: Any) -> bool:
        return etype in self.rules.view_types or etype in self.rules.strong_types

    def observe(self, user_id: str, ts: int, fields: Any) -> list[str]:
        """Record one event's interest; returns the keys it wrote."""
        etype = fields.get("type")
        if not self.counts(etype):
            return []
        keys = interest_keys(fields)
        for key in keys:
            self.observe_key(key, user_id, ts, etype, fields)
        return keys

    def observe_key(self, key: str, user_id: str, ts: int, etype: Any, fields: Any) -> None:
        rules, store = self.rules, self.store
        entry = store.get(key, user_id)
        if entry is None:
            if store.count(key) >= rules.max_users:
                self._evict(key, ts)
            entry = Interest(ts)
        elif ts > entry.last:
            entry.last = ts
        if etype in rules.strong_types:
            if entry.strong is None or ts > entry.strong:
                entry.strong = ts
        elif ts not in entry.views:
            entry.views.append(ts)
            entry.views.sort()
            del entry.views[:-rules.views]
        if key.startswith(PRODUCT) and ts >= entry.last:  # the newest event names these
            price = price_cents_of(fields)
            if price is not None:
                entry.price_cents = price
            variant = fields.get("variant")
            if type(variant) is str and variant:
                entry.variant = variant
        score = fields.get("lead_score")
        if type(score) in (int, float) and type(score) is not bool:
            entry.score = float(score)
        store.put(key, user_id, entry)

    def _evict(self, key: str, now: int) -> None:
        """Make room: drop entries past the window, then the lowest ranked
        down to 7/8 of the cap; every entry dropped is counted."""
        rules, store = self.rules, self.store
        ranked = []
        for user in store.users(key):
            entry = store.get(key, user)
            if entry is None:
                continue
            if entry.last < now - rules.within_ms:
                store.delete(key, user)
                self.dropped += 1
            else:
                ranked.append((entry.rank(user), user))
        if len(ranked) >= rules.max_users:
            keep = rules.max_users - max(1, rules.max_users // 8)
            ranked.sort()
            for _, user in ranked[keep:]:
                store.delete(key, user)
                self.dropped += 1

    def interested(self, key: str, at: int) -> list[tuple[str, Interest]]:
        """The users with interest in ``key`` at ``at``, likeliest buyer first."""
        store, rules = self.store, self.rules
        found = []
        for user in store.users(key):
            entry = store.get(key, user)
            if entry is not None and entry.holds(at, rules):
                found.append((user, entry))
        found.sort(key=lambda item: item[1].rank(item[0]))
        return found
