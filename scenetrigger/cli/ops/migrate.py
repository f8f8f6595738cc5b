"""``scenetrigger migrate``: move Redis data written before the cluster key
layout (hash-tagged user keys, pending deliveries in buckets) into it; see
:mod:`scenetrigger.ops.migrate` and docs/deploy.md. Stop deliver, serve and
journeys first; running it twice is harmless."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from typing import Any

import orjson

from channels.redis_client import DEFAULT_REDIS_URL, redis_url_or_env
from strategies.store import DEFAULT_PREFIX
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "migrate", help="move Redis data of an older version into the cluster key layout",
        description="Moves a user's keys to their {user} hash-tagged names and the one "
                    "pending-delivery set into its buckets, keeping TTLs. Stop deliver, "
                    "serve and journeys first. Progress on stderr, a summary at the end.")
    parser.add_argument("--config", help="config (its delivery.redis_prefix)")
    parser.add_argument("--redis-url", help=f"default: $SCENETRIGGER_REDIS_URL or "
                                            f"{DEFAULT_REDIS_URL}")
    parser.add_argument("--tags-prefix", default=DEFAULT_PREFIX,
                        help="Redis prefix of tags and scores (as `journeys --redis-prefix`)")
    parser.add_argument("--dry-run", action="store_true", help="count what would move, move nothing")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    try:
        summary = asyncio.run(_main(args))
    except (RedisError, OSError) as exc:
        raise SceneTriggerError(f"Redis at {redis_url_or_env(args.redis_url)}: {exc}") from None
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        verb = "would move" if args.dry_run else "moved"
        for kind, count in sorted(summary["moved"].items()):
            print(f"{verb} {count:>10,}  {kind}")
        for kind, count in sorted(summary["left"].items()):
            print(f"left  {count:>10,}  {kind}")
        print(f"{verb} {summary['total_moved']:,} keys and pending deliveries in all")
    return 0


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from channels.redis_client import redis_client
    from config.loader import load_config
    from scenetrigger.ops.migrate import Migration

    prefix = load_config(args.config).delivery.redis_prefix
    client = redis_client(redis_url_or_env(args.redis_url))

    def progress(moved: Counter[str]) -> None:
        print(f"migrate: {sum(moved.values()):,} moved so far", file=sys.stderr, flush=True)

    try:
        return await Migration(client, prefix, args.tags_prefix, dry_run=args.dry_run,
                               progress=progress).run()
    finally:
        await client.aclose()
