"""The product catalog content templates render from: Redis for the live
path, memory for unit tests and dry runs, both behind :class:`Catalog`.

Redis layout (``prefix`` default ``st:cat:``):

* ``{prefix}p:{product_id}``: HASH name, price_cents, url, image, category,
  brand, is_new (0/1), discount (whole percent);
* ``{prefix}c:{category}``: ZSET of product ids, score 1 for new products, 0
  otherwise (so a category's new products come first);
* ``{prefix}hot``: ZSET of discounted product ids, score = discount percent.

Every lookup is one round trip (a pipeline), whatever the number of ids.
Files: CSV with a header naming the fields, JSONL objects, or the rees46
event CSV (a catalog derived from the events; see :func:`derive_rees46`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from channels.errors import ChannelError

REES46_HEADER = ["event_time", "event_type", "product_id", "category_id", "category_code",
                 "brand", "price", "user_id", "user_session"]
DEFAULT_PREFIX = "st:cat:"
_BATCH = 500
_CACHED_PRODUCTS = 100_000


class CatalogError(ChannelError):
    """A catalog file that cannot be read."""


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    price_cents: int = 0
    url: str = ""
    image: str = ""
    category: str = ""
    brand: str = ""
    is_new: bool = False
    discount: int = 0  # whole percent off

    def to_hash(self) -> dict[str, str]:
        return {"name": self.name, "price_cents": str(self.price_cents), "url": self.url,
                "image": self.image, "category": self.category, "brand": self.brand,
                "is_new": "1" if self.is_new else "0", "discount": str(self.discount)}

    @classmethod
    def from_hash(cls, product_id: str, data: Mapping[str, str]) -> Product:
        return cls(product_id, data.get("name", ""), _int(data.get("price_cents")),
                   data.get("url", ""), data.get("image", ""), data.get("category", ""),
                   data.get("brand", ""), data.get("is_new") == "1", _int(data.get("discount")))


class Catalog(Protocol):
    async def get_many(self, product_ids: Sequence[str]) -> dict[str, Product]: ...

    async def in_category(self, category: str, limit: int) -> list[Product]: ...

    async def hot(self, limit: int) -> list[Product]: ...


class MemoryCatalog:
    """In-process catalog with the same ordering rules as the Redis one."""

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._products: dict[str, Product] = {}
        for product in products:
            self._products[product.product_id] = product

    def __len__(self) -> int:
        return len(self._products)

    async def get_many(self, product_ids: Sequence[str]) -> dict[str, Product]:
        return {pid: self._products[pid] for pid in product_ids if pid in self._products}

    async def in_category(self, category: str, limit: int) -> list[Product]:
        found = [p for p in self._products.values() if p.category == category]
        # Redis ZREVRANGE order: score desc, then member desc.
        found.sort(key=lambda p: (p.is_new, p.product_id), reverse=True)
        return found[:limit]

    async def hot(self, limit: int) -> list[Product]:
        found = [p for p in self._products.values() if p.discount > 0]
        found.sort(key=lambda p: (p.discount, p.product_id), reverse=True)
        return found[:limit]


class RedisCatalog:
    """The catalog in Redis (``redis.asyncio.Redis`` with decode_responses=True)."""

    def __init__(self, redis: Any, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix

    async def load(self, products: Iterable[Product]) -> int:
        count = 0
        pipe = self._redis.pipeline(transaction=False)
        pending = 0
        for product in products:
            key = f"{self._prefix}p:{product.product_id}"
            pipe.delete(key)
            pipe.hset(key, mapping=product.to_hash())
            if product.category:
                pipe.zadd(f"{self._prefix}c:{product.category}",
                          {product.product_id: 1 if product.is_new else 0})
            if product.discount > 0:
                pipe.zadd(f"{self._prefix}hot", {product.product_id: product.discount})
            else:
                pipe.zrem(f"{self._prefix}hot", product.product_id)
            count += 1
            pending += 1
            if pending >= _BATCH:
                await pipe.execute()
                pending = 0
        if pending:
            await pipe.execute()
        return count

    async def get_many(self, product_ids: Sequence[str]) -> dict[str, Product]:
        if not product_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for pid in product_ids:
            pipe.hgetall(f"{self._prefix}p:{pid}")
        rows = await pipe.execute()
        return {pid: Product.from_hash(pid, row) for pid, row in zip(product_ids, rows,
                                                                      strict=True) if row}

    async def in_category(self, category: str, limit: int) -> list[Product]:
        ids = await self._redis.zrevrange(f"{self._prefix}c:{category}", 0, limit - 1)
        return self._ordered(ids, await self.get_many(ids))

    async def hot(self, limit: int) -> list[Product]:
        ids = await self._redis.zrevrange(f"{self._prefix}hot", 0, limit - 1)
        return self._ordered(ids, await self.get_many(ids))

    @staticmethod
    def _ordered(ids: Sequence[str], found: Mapping[str, Product]) -> list[Product]:
        return [found[pid] for pid in ids if pid in found]


# -- files -------------------------------------------------------------------


def read_products(path: str | Path, base_url: str = "https://shop.example.com") -> list[Product]:
    """Products from CSV (header row), JSONL, or a rees46 event CSV (derived)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from None
    text = data.decode("utf-8", "replace").lstrip("\ufeff")
    head = text.lstrip()[:1]
    if head in ("{", "["):
        return list(_from_jsonl(text, str(path)))
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None:
        return []
    if header == REES46_HEADER:
        return derive_rees46(rows, base_url)
    return list(_from_csv(header, rows, str(path)))


def product_from_mapping(obj: Mapping[str, Any], where: str) -> Product:
    pid = obj.get("product_id")
    if pid is None or pid == "":
        raise CatalogError(f"{where}: product_id is missing")
    name = obj.get("name")
    return Product(
        product_id=str(pid),
        name=str(name) if name not in (None, "") else f"Product {pid}",
        price_cents=_price_cents(obj.get("price"), where),
        url=str(obj.get("url") or ""),
        image=str(obj.get("image") or ""),
        category=str(obj.get("category") or ""),
        brand=str(obj.get("brand") or ""),
        is_new=str(obj.get("is_new", "")).strip().lower() in ("1", "true", "yes"),
        discount=max(0, min(100, _int(obj.get("discount")))),
    )


def _from_jsonl(text: str, path: str) -> Iterator[Product]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CatalogError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise CatalogError(f"{path}:{number}: expected a JSON object")
        yield product_from_mapping(obj, f"{path}:{number}")


def _from_csv(header: list[str], rows: Iterator[list[str]], path: str) -> Iterator[Product]:
    names = [h.strip() for h in header]
    if "product_id" not in names:
        raise CatalogError(f"{path}: the CSV header needs a product_id column")
    for number, row in enumerate(rows, 2):
        if not row:
            continue
        yield product_from_mapping(dict(zip(names, row, strict=False)), f"{path}:{number}")


def derive_rees46(rows: Iterable[list[str]], base_url: str) -> list[Product]:
    """A demo catalog from rees46 events: the last seen price, brand and
    category per product. ``is_new`` and ``discount`` are NOT in the data:
    they are synthesised deterministically from the product id (1 in 8 new;
    1 in 4 discounted by 10-40 %) so the demo has new and hot items."""
    seen: dict[str, tuple[str, str, str]] = {}
    for row in rows:
        if len(row) != 9 or not row[2]:
            continue
        seen[row[2]] = (row[4], row[5], row[6])
    products = []
    for pid, (category, brand, price) in seen.items():
        digest = hashlib.blake2b(pid.encode(), digest_size=2).digest()
        leaf = category.rsplit(".", 1)[-1].replace("_", " ") if category else "item"
        name = f"{brand.title()} {leaf}".strip() if brand else leaf.capitalize()
        products.append(Product(
            product_id=pid, name=name, price_cents=_price_cents(price, pid),
            url=f"{base_url}/product/{pid}", image=f"{base_url}/img/{pid}.jpg",
            category=category, brand=brand, is_new=digest[0] % 8 == 0,
            discount=10 * (1 + (digest[1] >> 2) % 4) if digest[1] % 4 == 0 else 0,
        ))
    return products


def _price_cents(value: Any, where: str) -> int:
    if value is None or value == "":
        return 0
    try:
        return max(0, round(float(value) * 100))
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: bad price {value!r}") from None


def _int(value: Any) -> int:
    try:
        return int(float(value)) if value not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


class CachedCatalog:
    """A catalog read through a per-process cache of ``ttl_s`` seconds: an
    on-site slot answers from memory, not a Redis trip per product (a price
    or a new arrival shows within ``ttl_s``)."""

    def __init__(self, inner: Catalog, ttl_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._ttl = ttl_s
        self._clock = clock
        self._products: dict[str, tuple[float, Product | None]] = {}
        self._lists: dict[tuple[str, int], tuple[float, list[Product]]] = {}

    async def get_many(self, product_ids: Sequence[str]) -> dict[str, Product]:
        now = self._clock()
        stale = [pid for pid in product_ids
                 if (hit := self._products.get(pid)) is None or hit[0] <= now]
        found = await self._inner.get_many(stale) if stale else {}
        # The answer before the bound may clear the cache (a fresh hit goes with it).
        out = {pid: p for pid in product_ids
               if (p := found[pid] if pid in found else
                   None if pid in stale else self._products[pid][1]) is not None}
        if stale:
            if len(self._products) > _CACHED_PRODUCTS:  # bounded: start again
                self._products.clear()
            for pid in stale:
                self._products[pid] = (now + self._ttl, found.get(pid))
        return out

    async def in_category(self, category: str, limit: int) -> list[Product]:
        return await self._list(f"c:{category}", limit,
                                lambda: self._inner.in_category(category, limit))

    async def hot(self, limit: int) -> list[Product]:
        return await self._list("hot", limit, lambda: self._inner.hot(limit))

    async def _list(self, name: str, limit: int,
                    read: Callable[[], Awaitable[list[Product]]]) -> list[Product]:
        now = self._clock()
        hit = self._lists.get((name, limit))
        if hit is None or hit[0] <= now:
            hit = self._lists[(name, limit)] = (now + self._ttl, await read())
        return hit[1]
