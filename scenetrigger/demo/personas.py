"""A synthetic clickstream of shopper personas, deterministic for a seed.

Five personas, each with its own session script:

- ``searcher``: searches, then compares the searched product (views it again and again);
- ``browser``: opens a category page and views many products of that category;
- ``promo_hunter``: lands on ``/promo/...`` pages and views discounted items;
- ``abandoner``: views, puts something in the cart and leaves;
- ``loyal``: views, carts and buys, and comes back to buy again.

A fixed pool of ``users`` shoppers (personas assigned round-robin) starts
sessions at ``rate`` events per simulated second on average; the first five
sessions (one per persona) open together so every scene shows up early.
A shopper whose session ended stays away for at least ``MIN_AWAY_MS``, longer
than the 30 minute absence scene, so an abandoned cart fires on the clock
alone, with no further traffic from that shopper.

Events are plain dicts in the native JSONL shape (``user_id``, ``ts`` in
integer ms, ``type``, optional fields); timestamps never go backwards. The
first event of a session carries the shopper's time zone (``tz``).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

PERSONAS = ("searcher", "browser", "promo_hunter", "abandoner", "loyal")
PERSONA_LABELS = {
    "searcher": "search-driven shopper",
    "browser": "category browser",
    "promo_hunter": "promo hunter",
    "abandoner": "cart abandoner",
    "loyal": "loyal buyer",
}
MIN_AWAY_MS = 35 * 60_000
MEAN_SESSION_EVENTS = 5.5  # mean of the scripts below; turns a rate into session starts

_SEC = 1000
_NEVER = 1 << 62
_MIN = 60_000
_HOUR = 3_600_000

Event = dict[str, Any]
Step = tuple[int, Event]  # (gap in ms since the previous step, event fields without user/ts)


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float  # list price
    brand: str
    discount_pct: int = 0  # on sale when > 0
    is_new: bool = False

    @property
    def sale_price(self) -> float:
        return round(self.price * (100 - self.discount_pct) / 100, 2)


_CATALOG_SPEC: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "apparel.shoes": (
        ("Trail Runner 2", "CloudWalk Sneaker", "Harbor Loafer", "Summit Hiking Boot",
         "Sprint Racer"),
        ("running shoes", "hiking boots", "sneakers"),
    ),
    "electronics.smartphone": (
        ("Nova 12 Pro", "Pixelite 8", "Orbit Mini", "Zen X5"),
        ("smartphone", "5g phone", "phone 256gb"),
    ),
    "electronics.audio.headphone": (
        ("QuietPods ANC", "Studio Over-Ear", "BassBuds Lite", "Commuter Headset"),
        ("noise cancelling headphones", "wireless earbuds"),
    ),
    "appliances.kitchen.kettle": (
        ("Glass Kettle 1.7L", "Temp-Control Kettle", "Travel Kettle"),
        ("electric kettle", "tea kettle"),
    ),
    "beauty.skincare": (
        ("Hydra Serum", "Daily SPF 50", "Night Repair Cream", "Clay Mask"),
        ("sunscreen", "face serum", "moisturizer"),
    ),
    "sports.bicycle": (
        ("City Cruiser 3", "Gravel Pro", "Kids Balance Bike"),
        ("gravel bike", "city bike"),
    ),
}
PROMO_PAGES = ("/promo/flash-sale", "/promo/double-11", "/promo/618", "/promo/new-user")
TIMEZONES = ("Asia/Shanghai", "Asia/Shanghai", "Asia/Tokyo", "Europe/Berlin", "America/New_York")
_BRANDS = ("Acme", "Northwind", "Lumen", "Kite", "Hanami")


def _build_catalog() -> tuple[dict[str, Product], dict[str, list[Product]], dict[str, str]]:
    """A fixed catalog (independent of the seed): same ids and prices in every run."""
    rng = random.Random(20191001)  # noqa: S311 - synthetic data, not security
    products: dict[str, Product] = {}
    by_category: dict[str, list[Product]] = {}
    queries: dict[str, str] = {}
    next_id = 1_000_100
    for category, (names, category_queries) in _CATALOG_SPEC.items():
        items = []
        for position, name in enumerate(names):
            price = round(rng.uniform(9, 900), 2)
            # The second item of every category is on sale, so each has a deal.
            discount = 20 if position == 1 else rng.choice((0, 0, 0, 10, 30, 50))
            product = Product(str(next_id), name, category, price, rng.choice(_BRANDS),
                              discount, is_new=rng.random() < 0.3)
            next_id += 37
            products[product.product_id] = product
            items.append(product)
        by_category[category] = items
        for query in category_queries:
            queries[query] = category
    return products, by_category, queries


CATALOG, BY_CATEGORY, QUERIES = _build_catalog()
ON_SALE = tuple(p for p in CATALOG.values() if p.discount_pct > 0)
_CATEGORIES = tuple(BY_CATEGORY)
_QUERY_LIST = tuple(QUERIES)


def product_name(product_id: object) -> str | None:
    """The catalog name of a product id (None when it is not a demo product)."""
    product = CATALOG.get(str(product_id)) if product_id is not None else None
    return product.name if product is not None else None


# -- session scripts: each yields (gap_ms, fields) ---------------------------------


def _product_fields(product: Product, source: str, **extra: Any) -> Event:
    fields: Event = {
        "product_id": product.product_id,
        "category": product.category,
        "price": product.price,
        "source": source,
    }
    fields.update(extra)
    return fields


def _view(product: Product, source: str, **extra: Any) -> Event:
    return {"type": "view", **_product_fields(product, source, **extra)}


def _think(rng: random.Random, low_s: int = 8, high_s: int = 75) -> int:
    return rng.randint(low_s * _SEC, high_s * _SEC)


def _searcher(rng: random.Random) -> Iterator[Step]:
    query = rng.choice(_QUERY_LIST)
    category = QUERIES[query]
    results = BY_CATEGORY[category]
    target = rng.choice(results)
    other = rng.choice([p for p in results if p is not target] or [target])
    refined = rng.choice([q for q, c in QUERIES.items() if c == category])
    # Searches, refines, and keeps coming back to the product it searched for.
    yield 0, {"type": "search", "query": query, "page": "/search"}
    yield _think(rng), _view(target, "search", query=query)
    yield _think(rng), {"type": "search", "query": refined, "page": "/search"}
    yield _think(rng), _view(other, "search", query=refined)
    yield _think(rng), {"type": "search", "query": query, "page": "/search"}
    yield _think(rng), _view(target, "search", query=query)
    yield _think(rng), _view(target, "search", query=query)
    if rng.random() < 0.3:
        yield _think(rng), {"type": "cart", **_product_fields(target, "search")}
        yield _think(rng, 20, 120), {"type": "purchase", **_product_fields(target, "search")}


def _browser(rng: random.Random) -> Iterator[Step]:
    category = rng.choice(_CATEGORIES)
    items = BY_CATEGORY[category]
    yield 0, {"type": "page", "page": f"/category/{category}", "category": category}
    favourite = rng.choice(items)
    looks = [rng.choice(items) for _ in range(rng.randint(4, 7))]
    if rng.random() < 0.5:  # keeps coming back to one item
        looks += [favourite, favourite, favourite]
        rng.shuffle(looks)
    for product in looks:
        yield _think(rng, 5, 50), _view(product, "category")
    if rng.random() < 0.4:
        yield _think(rng), {"type": "favorite", **_product_fields(favourite, "category")}


def _promo_hunter(rng: random.Random) -> Iterator[Step]:
    pages = rng.sample(PROMO_PAGES, 2)
    yield 0, {"type": "page", "page": pages[0]}
    deals = rng.sample(ON_SALE, min(3, len(ON_SALE)))
    for product in deals:
        yield _think(rng, 5, 40), _view(
            product, "promo", price=product.sale_price, list_price=product.price,
            discount_pct=product.discount_pct, campaign=pages[0],
        )
    if rng.random() < 0.5:
        yield _think(rng), {"type": "page", "page": pages[1]}
    if rng.random() < 0.5:  # buys the first deal; the others only look
        fields = _product_fields(deals[0], "promo", price=deals[0].sale_price)
        yield _think(rng), {"type": "cart", **fields}
        yield _think(rng, 20, 90), {"type": "purchase", **fields}


def _abandoner(rng: random.Random) -> Iterator[Step]:
    category = rng.choice(_CATEGORIES)
    items = BY_CATEGORY[category]
    for product in rng.sample(items, min(len(items), rng.randint(2, 3))):
        yield _think(rng, 5, 40), _view(product, "category")
    pick = rng.choice(items)
    yield _think(rng, 5, 40), _view(pick, "recommendation")
    yield _think(rng, 5, 40), {"type": "cart", **_product_fields(pick, "recommendation")}
    # ... and leaves: no purchase, and away long enough for the timer to fire.


def _loyal(rng: random.Random) -> Iterator[Step]:
    category = rng.choice(_CATEGORIES)
    items = BY_CATEGORY[category]
    basket = rng.sample(items, min(len(items), rng.choice((1, 1, 2))))
    if rng.random() < 0.4:  # weighs a bigger purchase: three looks first
        for _ in range(2):
            yield _think(rng, 5, 30), _view(basket[0], "recommendation")
    for product in basket:
        yield _think(rng, 5, 30), _view(product, "recommendation")
        yield _think(rng, 5, 30), {"type": "cart", **_product_fields(product, "recommendation")}
    if rng.random() < 0.1:
        return  # interrupted before paying: even loyal buyers leave a cart sometimes
    total = round(sum(p.price for p in basket), 2)
    yield _think(rng, 20, 90), {
        "type": "purchase", "product_id": basket[0].product_id, "category": category,
        "price": total, "items": len(basket), "source": "checkout",
    }


_SCRIPTS = {
    "searcher": _searcher,
    "browser": _browser,
    "promo_hunter": _promo_hunter,
    "abandoner": _abandoner,
    "loyal": _loyal,
}
# How long a shopper stays away after a session (loyal buyers come back soonest).
_AWAY_MS = {
    "searcher": (MIN_AWAY_MS, 8 * _HOUR),
    "browser": (MIN_AWAY_MS, 6 * _HOUR),
    "promo_hunter": (MIN_AWAY_MS, 12 * _HOUR),
    "abandoner": (MIN_AWAY_MS + 25 * _MIN, 24 * _HOUR),
    "loyal": (MIN_AWAY_MS, 3 * _HOUR),
}


# -- the generator ---------------------------------------------------------------------


class Clickstream:
    """An endless, time-ordered stream of persona events (iterate it).

    ``rate`` is the mean number of events per *simulated* second across all
    shoppers; the demo sets it to ``events per real second / speed``.
    """

    def __init__(
        self,
        users: int = 200,
        seed: int = 7,
        start_ms: int = 1_700_000_000_000,
        rate: float = 1.0,
        user_prefix: str = "u",
    ) -> None:
        if users < len(PERSONAS):
            raise ValueError(f"need at least {len(PERSONAS)} users (one per persona)")
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.users = users
        self.seed = seed
        self.start_ms = start_ms
        self.rate = rate
        self._rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
        width = len(str(users - 1))
        self._ids = [f"{user_prefix}{i:0{width}d}" for i in range(users)]
        self._persona_by_id = {uid: PERSONAS[i % len(PERSONAS)] for i, uid in enumerate(self._ids)}
        # Free shoppers per persona (indexes into _ids) and those away until a time.
        self._free: dict[str, list[int]] = {p: [] for p in PERSONAS}
        for i in range(users):
            self._free[PERSONAS[i % len(PERSONAS)]].append(i)
        self._away: list[tuple[int, int]] = []  # (back at ms, user index)
        self._sessions: list[tuple[int, int, int, Event, Iterator[Step]]] = []
        self._seq = itertools.count()
        self._session_ids = itertools.count(1)
        self._round: list[str] = []
        self._next_start = start_ms
        self._warm_start()

    def persona_of(self, user_id: str) -> str | None:
        return self._persona_by_id.get(user_id)

    @property
    def personas(self) -> dict[str, str]:
        """user id -> persona for every shopper of the pool."""
        return dict(self._persona_by_id)

    def __iter__(self) -> Iterator[Event]:
        return self._events()

    # -- internals -------------------------------------------------------------

    def _warm_start(self) -> None:
        """The shop opens with one session per persona, a few seconds apart."""
        order = list(PERSONAS)
        self._rng.shuffle(order)
        at = self.start_ms
        for persona in order:
            self._open_session(at, persona)
            at += self._rng.randint(2 * _SEC, 15 * _SEC)
        self._next_start = at + self._start_gap()

    def _start_gap(self) -> int:
        mean_ms = MEAN_SESSION_EVENTS / self.rate * 1000
        return max(1, round(self._rng.expovariate(1.0 / mean_ms)))

    def _next_persona(self) -> str:
        # Shuffled rounds keep the mix balanced at every moment of the stream.
        if not self._round:
            self._round = list(PERSONAS)
            self._rng.shuffle(self._round)
        return self._round.pop()

    def _open_session(self, at: int, persona: str) -> bool:
        """Start a session for a free shopper (of ``persona`` if one is free)."""
        while self._away and self._away[0][0] <= at:
            _, index = heapq.heappop(self._away)
            self._free[PERSONAS[index % len(PERSONAS)]].append(index)
        pool = self._free[persona]
        if not pool:
            pool = next((self._free[p] for p in PERSONAS if self._free[p]), [])
        if not pool:
            return False  # every shopper is online or away: the pool caps the rate
        pick = self._rng.randrange(len(pool))
        pool[pick], pool[-1] = pool[-1], pool[pick]
        index = pool.pop()
        uid = self._ids[index]
        script = _SCRIPTS[self._persona_by_id[uid]](self._rng)
        steps = _with_session(script, f"s{next(self._session_ids)}",
                              TIMEZONES[(index // len(PERSONAS)) % len(TIMEZONES)])
        self._push(at, index, steps)
        return True

    def _push(self, at: int, index: int, steps: Iterator[Step]) -> None:
        """Queue the session's next step, or send the shopper away when it is over."""
        step = next(steps, None)
        if step is None:
            low, high = _AWAY_MS[PERSONAS[index % len(PERSONAS)]]
            heapq.heappush(self._away, (at + self._rng.randint(low, high), index))
            return
        gap, fields = step
        heapq.heappush(self._sessions, (at + gap, next(self._seq), index, fields, steps))

    def _events(self) -> Iterator[Event]:
        sessions = self._sessions
        ids = self._ids
        while True:
            if not sessions or self._next_start <= sessions[0][0]:
                opened = self._open_session(self._next_start, self._next_persona())
                self._next_start += self._start_gap()
                if not opened:
                    # Nobody free: retry when someone is back or the next step is due.
                    retry = min(self._away[0][0] if self._away else _NEVER,
                                sessions[0][0] if sessions else _NEVER)
                    self._next_start = max(self._next_start, retry)
                continue
            ts, _, index, fields, steps = heapq.heappop(sessions)
            yield {"user_id": ids[index], "ts": ts, **fields}
            self._push(ts, index, steps)


def _with_session(script: Iterator[Step], session_id: str, tz: str) -> Iterator[Step]:
    first = True
    for gap, fields in script:
        fields["session_id"] = session_id
        if first:  # the profile keeps the zone: quiet hours and habits are local
            fields["tz"] = tz
            first = False
        yield gap, fields


def generate_events(
    n: int,
    users: int = 100_000,
    seed: int = 7,
    start_ms: int = 1_700_000_000_000,
    *,
    rate: float = 50.0,
) -> Iterator[Event]:
    """``n`` persona events in time order (``rate`` events per simulated second)."""
    return itertools.islice(Clickstream(users, seed, start_ms, rate), n)


def write_jsonl(events: Iterable[Event], out: IO[bytes]) -> int:
    """Write events as JSONL (one object per line); returns the number written."""
    dumps = orjson.dumps
    written = 0
    batch: list[bytes] = []
    for event in events:
        batch.append(dumps(event))
        written += 1
        if len(batch) >= 4096:
            out.write(b"\n".join(batch) + b"\n")
            batch.clear()
    if batch:
        out.write(b"\n".join(batch) + b"\n")
    return written
