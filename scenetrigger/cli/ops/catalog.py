"""``scenetrigger catalog load FILE``: put a product catalog into Redis for
content templates (CSV with a header, JSONL, or a rees46 event CSV), or, with
``--broker``, onto the catalog change stream (``PREFIX.catalog``, JSONL
catalog records, only the products that changed since the topic's last
version; docs/catalog.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import orjson

from channels.content.catalog import DEFAULT_PREFIX, RedisCatalog, read_products
from channels.redis_client import DEFAULT_REDIS_URL, redis_url_or_env
from scenetrigger.cli.support import add_replication_argument
from triggers.errors import SceneTriggerError
from triggers.events import DEFAULT_MAX_ID_CHARS


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
    stream = load.add_argument_group(
        "catalog stream", "with --broker, FILE is JSONL catalog records (docs/catalog.md) and "
        "goes to the compacted catalog topic instead of Redis")
    add_stream_arguments(stream)
    stream.add_argument("--full", action="store_true",
                        help="send every record, not only those that changed since the "
                             "topic's last version")
    load.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    load.set_defaults(run=run_load)


def add_stream_arguments(group: Any) -> None:
    """The catalog stream's options (``catalog load`` and ``produce --catalog``)."""
    group.add_argument("--broker", help="Kafka bootstrap: send to the catalog topic")
    group.add_argument("--topic-prefix", help="PREFIX.catalog and PREFIX.dead-letters")
    group.add_argument("--catalog-topic", help="catalog topic (default PREFIX.catalog, else "
                                               "scenetrigger-catalog)")
    group.add_argument("--dead-letter-topic", help="topic for refused records (default "
                                                   "PREFIX.dead-letters, else "
                                                   "scenetrigger-deadletter)")
    group.add_argument("--config", help="config whose engine.max_id_chars bounds product, "
                                        "variant and category ids (default 256)")
    add_replication_argument(group)


def run_stream(args: argparse.Namespace, path: str, diff: bool) -> int:
    """Send a JSONL catalog file to the catalog topic; print the summary."""
    from agents.catalog_stream import CatalogTopics, decode_lines, publish_catalog
    from agents.topics import bootstrap_servers
    from config.loader import load_config

    max_id = load_config(args.config).engine.max_id_chars if args.config else \
        DEFAULT_MAX_ID_CHARS
    topics = CatalogTopics.of(args.topic_prefix, args.catalog_topic, args.dead_letter_topic)
    try:
        with open(path, "rb") as fh:
            if fh.read(4096).lstrip()[:1] not in (b"{", b""):
                # A templates' CSV would be dead-lettered line by line: say so once.
                raise SceneTriggerError(f"{path}: with --broker the file is JSONL catalog "
                                        "records, one object a line (docs/catalog.md)")
            fh.seek(0)
            summary = asyncio.run(publish_catalog(
                bootstrap_servers(args.broker), decode_lines(fh, max_id), topics,
                source="catalog:" + os.path.basename(path), diff=diff, max_id_chars=max_id,
                replication=args.replication_factor))
    except OSError as exc:
        raise SceneTriggerError(f"cannot read {path} or reach Kafka: "
                                f"{exc.strerror or exc}") from None
    if getattr(args, "json", False):
        print(orjson.dumps(summary.to_dict()).decode())
    print(summary.render(), file=sys.stderr)
    return 0


def run_load(args: argparse.Namespace) -> int:
    if args.broker:
        return run_stream(args, args.file, diff=not args.full)
    products = read_products(args.file, base_url=args.base_url)
    url = redis_url_or_env(args.redis_url)
    count = asyncio.run(_load(url, args.prefix, products))
    if args.json:
        print(orjson.dumps({"loaded": count, "prefix": args.prefix}).decode())
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
