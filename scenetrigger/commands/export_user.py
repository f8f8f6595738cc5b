"""``scenetrigger export-user USER``: everything held about a user in Redis,
as JSON (an access request): every key with its value, by kind, the journey
state, deferred messages and dead-letter entries. What Kafka topics still
hold until their retention is listed in docs/audiences.md."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from scenetrigger.commands.erase import add_common, eraser_for


def register(sub: Any) -> None:
    parser = sub.add_parser("export-user", help="write everything held about a user as JSON")
    add_common(parser)
    parser.add_argument("--out", help="write here instead of stdout")
    parser.add_argument("--json", action="store_true", help="one line (default: indented)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from scenetrigger.commands.users import run_async

    data = run_async(_main(args), args.redis_url)
    text = orjson.dumps(data, option=0 if args.json else orjson.OPT_INDENT_2)
    if args.out:
        with open(args.out, "wb") as out:
            out.write(text + b"\n")
        print(f"export-user: {sum(len(v) for v in data['keys'].values()):,} keys written to "
              f"{args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text.decode() + "\n")
    return 0


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from channels.registry import redis_url_or_env

    client = Redis.from_url(redis_url_or_env(args.redis_url), decode_responses=True)
    try:
        data: dict[str, Any] = await eraser_for(args, client).export(args.user)
        return data
    finally:
        await client.aclose()
