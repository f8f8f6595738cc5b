"""``scenetrigger profiles``: the worker's ``PREFIX.profiles`` into Redis,
where ``serve`` reads each visitor's live profile (on-site slots).

Reads the compacted topic in a consumer group (``--group``) from the
beginning on its first start and writes each record through
:class:`channels.audience.live_profile.LiveProfileStore` under
``--tags-prefix`` (serve's), a tombstone deleting the key; an unusable record
goes to the delivery dead-letter stream with its reason
(:mod:`channels.audience.live_profile_feed`, which also says why this is a
process of its own). A profile of a user with an erasure receipt (under
``--config``'s ``delivery.redis_prefix``, named with ``$SCENETRIGGER_HASH_KEY``)
is never written: the key is deleted instead. Runs until stopped (SIGINT/SIGTERM), or with
``--until-end`` until the topic is read to where it ended at the start,
then prints what it did (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import orjson

from agents.topics import DEFAULT_PARTITIONS
from channels.transports.deadletter import DEFAULT_STREAM
from scenetrigger.cli.support import add_replication_argument, positive


def register(sub: Any) -> None:
    parser = sub.add_parser("profiles", help="keep each user's live profile in Redis from the "
                                             "worker's PREFIX.profiles (for on-site slots)")
    parser.add_argument("--broker", help="Kafka bootstrap (default: $SCENETRIGGER_KAFKA)")
    parser.add_argument("--topic-prefix", help="read PREFIX.profiles (as the worker's "
                                               "--topic-prefix; default scenetrigger-profiles)")
    parser.add_argument("--group", default="scenetrigger-profiles",
                        help="consumer group (default scenetrigger-profiles)")
    parser.add_argument("--redis-url", help="default: $SCENETRIGGER_REDIS_URL")
    parser.add_argument("--config", help="config (delivery.redis_prefix: where the erasure "
                                         "receipts are; an erased user's profile is never "
                                         "written)")
    parser.add_argument("--tags-prefix", default="scenetrigger:",
                        help="Redis prefix of the profile keys, <prefix>profile:{user} "
                             "(serve's --tags-prefix; default scenetrigger:)")
    parser.add_argument("--dead-letter-stream", default=DEFAULT_STREAM,
                        help=f"where unusable records go (default {DEFAULT_STREAM})")
    parser.add_argument("--until-end", action="store_true",
                        help="stop once the topic is read to where it ended at the start")
    parser.add_argument("--concurrency", type=positive, default=64,
                        help="Redis writes in flight (default 64)")
    parser.add_argument("--partitions", type=positive, default=DEFAULT_PARTITIONS,
                        help="partitions of the topic if this command creates it (the "
                             f"worker's --partitions; default {DEFAULT_PARTITIONS})")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address /metrics listens on (default 127.0.0.1)")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_replication_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    summary = asyncio.run(_main(args))
    if args.json:
        print(orjson.dumps(summary).decode())
        return 0
    results = summary["results"]
    print(f"{summary['records']:,} records from {summary['topic']}: "
          + ", ".join(f"{name.replace('_', ' ')} {n:,}" for name, n in results.items()))
    for reason, n in sorted(summary["malformed"].items()):
        print(f"  dead-lettered as {reason}: {n:,} (stream {summary['dead_letter_stream']})")
    return 0


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry, start_http_server

    from agents.kafka_clients import new_consumer
    from agents.producer import ensure_topics
    from agents.topics import bootstrap_servers, topic_name
    from channels.audience.live_profile import LiveProfileStore
    from channels.audience.live_profile_feed import ProfileFeed
    from channels.erasure_receipts import erased_at
    from channels.redis_client import redis_client, redis_url_or_env
    from channels.transports.deadletter import DeadLetterStore
    from config.hash_keys import startup_check
    from config.loader import load_config
    from triggers.errors import SceneTriggerError

    keys = startup_check("profiles")  # erasure receipts are named with the key
    receipts = load_config(args.config).delivery.redis_prefix
    topic = topic_name(args.topic_prefix, "profiles")
    bootstrap = bootstrap_servers(args.broker)
    try:  # subscribing to a topic not there yet would wait for a metadata refresh
        await ensure_topics(bootstrap, [topic], args.partitions,
                            configs={topic: {"cleanup.policy": "compact"}},
                            replication=args.replication_factor)
    except Exception as exc:
        raise SceneTriggerError(f"cannot reach Kafka at {bootstrap}: {exc!r}") from None
    registry = CollectorRegistry()
    client = redis_client(redis_url_or_env(args.redis_url))
    consumer = bar = None
    try:  # from here on the client is closed however the start fails
        consumer = new_consumer(bootstrap, topic, group_id=args.group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
        bar = _progress(args)
        await client.ping()
        await consumer.start()
        feed = ProfileFeed(LiveProfileStore(client, args.tags_prefix), consumer,
                           registry=registry, concurrency=args.concurrency,
                           dead_letter=DeadLetterStore(client, args.dead_letter_stream),
                           on_records=bar.update if bar is not None else None,
                           erased=lambda users: erased_at(client, receipts, users, keys))
        if args.metrics_port:
            start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, feed.stop)
        print(f"scenetrigger profiles: group {args.group}, {topic} on {bootstrap} -> "
              f"{args.tags_prefix}profile:{{user}}", file=sys.stderr, flush=True)
        try:
            counts = await feed.run(until_end=args.until_end)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        if bar is not None:
            bar.close()
        if consumer is not None:
            await consumer.stop()
        await client.aclose()
    return {"topic": topic, "group": args.group, "records": counts.records,
            "results": counts.results, "malformed": counts.malformed,
            "dead_letter_stream": args.dead_letter_stream}


def _progress(args: argparse.Namespace) -> Any:
    """Records handled, on stderr, only when a person is watching."""
    if args.no_progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" records", file=sys.stderr, desc="profiles")
