"""``scenetrigger redrive``: re-send dead-lettered deliveries, drop those that succeed."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

from prometheus_client import CollectorRegistry

from channels.base import DeliveryResult, Message
from channels.redis_client import DEFAULT_REDIS_URL, redis_client, redis_url_or_env
from channels.transports.deadletter import DEFAULT_STREAM, DeadLetter, DeadLetterStore, redrive
from channels.transports.registry import ChannelSender, build_registry
from config.loader import load_config
from scenetrigger.cli.support import positive


def register(sub: Any) -> None:
    parser = sub.add_parser("redrive", help="re-send dead-lettered deliveries")
    parser.add_argument("--config", help="config file with the channels (default: shipped)")
    parser.add_argument("--redis-url",
                        help="Redis of the dead-letter (default: $SCENETRIGGER_REDIS_URL, "
                             f"else {DEFAULT_REDIS_URL})")
    parser.add_argument("--stream", default=DEFAULT_STREAM, help="dead-letter stream key")
    parser.add_argument("--channel", help="only this channel's dead letters")
    parser.add_argument("--limit", type=positive, help="at most this many dead letters")
    parser.add_argument("--dry-run", action="store_true", help="list, send nothing")
    parser.add_argument("--concurrency", type=positive, default=16,
                        help="deliveries in flight (default 16)")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.add_argument("--json", action="store_true",
                        help="the summary as JSON on stdout (the listed entries go to stderr)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not config.channels:
        print("scenetrigger: this config has no 'channels' section: dead letters would all be "
              "skipped (pass --config with your channels)", file=sys.stderr)
        return 2
    url = redis_url_or_env(args.redis_url)
    return asyncio.run(_redrive(args, dict(config.channels), url))


async def _redrive(args: argparse.Namespace, models: dict[str, Any], url: str) -> int:
    client = redis_client(url)
    registry = build_registry(models, redis=client)
    # No dead-letter on the sender: redrive itself decides what happens to failures.
    sender = ChannelSender(registry, None, metrics_registry=CollectorRegistry())
    store = DeadLetterStore(client, args.stream)

    async def send(message: Message, channel: str) -> DeliveryResult:
        return await sender.send(message, channel, dead_letter=False)

    def show(letter: DeadLetter, verdict: str) -> None:
        if not args.quiet:
            user = letter.message.user_id if letter.message is not None else "?"
            print(f"{letter.entry_id}  {letter.channel:<16} user={user}  "
                  f"last error: {letter.error}  -> {verdict}",
                  file=sys.stderr if args.json else sys.stdout)

    try:
        report = await redrive(store, send, registry.__contains__, channel=args.channel,
                               limit=args.limit, dry_run=args.dry_run,
                               concurrency=args.concurrency, on_entry=show)
    finally:
        await registry.close()
        await client.aclose()
    print(report.render(args.dry_run), file=sys.stderr)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, **dataclasses.asdict(report)}))
    return 1 if report.failed else 0
