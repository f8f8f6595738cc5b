"""``scenetrigger catalog load FILE``: put a product catalog into Redis for
content templates (CSV with a header, JSONL, or a rees46 event CSV)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from channels.catalog import DEFAULT_PREFIX, RedisCatalog, read_products
from channels.registry import DEFAULT_REDIS_URL, redis_url_or_env
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("catalog", help="manage the product catalog in Redis")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = actions.add_parser("load", help="load products from CSV, JSONL or a rees46 CSV")
    load.add_argument("file", help="catalog file")
    load.add_argument("--redis-url", default=None,
                      help="Redis URL (default: $SCENETRIGGER_REDIS_URL or "
                           f"{DEFAULT_REDIS_URL})")
    load.add_argument("--prefix", default=DEFAULT_PREFIX, help="Redis key prefix")
    load.add_argument("--base-url", default="https://shop.example.com",
                      help="shop URL for links in a catalog derived from rees46 events")
    load.set_defaults(run=run_load)


def run_load(args: argparse.Namespace) -> int:
    products = read_products(args.file, base_url=args.base_url)
    url = redis_url_or_env(args.redis_url)
    count = asyncio.run(_load(url, args.prefix, products))
    print(f"loaded {count:,} products into {args.prefix}* at {_safe(url)}", file=sys.stderr)
    return 0


async def _load(url: str, prefix: str, products: list[Any]) -> int:
    from redis.exceptions import RedisError

    from channels.redis_client import redis_client

    client = redis_client(url, decode_responses=True)
    try:
        return await RedisCatalog(client, prefix).load(products)
    except (RedisError, OSError) as exc:
        raise SceneTriggerError(f"cannot load the catalog into Redis: {exc}") from None
    finally:
        await client.aclose()


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
