"""``scenetrigger erase USER``: remove everything held about a user (a
right-to-erasure request); see :mod:`scenetrigger.ops.erasure` and docs/audiences.md.

Redis keys (directory, consent, inbox, tags, score, journey state, caps,
dedupe, deferred messages, message index), the user's dead-letter entries
and, with ``--decisions FILE``, the user's lines of a decision log file are
removed at once. With ``--broker`` an ``erase`` event goes to the events
topic, keyed by the user: the worker that owns the user's partition deletes
the table key (a tombstone in the changelog), and a tombstone for the user
goes to ``PREFIX.profiles`` (when it exists), so ``scenetrigger profiles``
deletes the live profile wherever it fills one. Prints the receipt.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from channels.redis_client import DEFAULT_REDIS_URL, redis_url_or_env
from channels.transports.deadletter import DEFAULT_STREAM
from strategies.store import DEFAULT_PREFIX


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", help="user id")
    parser.add_argument("--config", help="config (delivery.redis_prefix, inbox key prefixes)")
    parser.add_argument("--redis-url", help=f"default: $SCENETRIGGER_REDIS_URL or "
                                            f"{DEFAULT_REDIS_URL}")
    parser.add_argument("--tags-prefix", default=DEFAULT_PREFIX,
                        help="Redis prefix of tags, scores and journey state "
                             "(as `journeys --redis-prefix`)")
    parser.add_argument("--dead-letter-stream", default=DEFAULT_STREAM,
                        help=f"delivery dead-letter stream (default {DEFAULT_STREAM})")


def register(sub: Any) -> None:
    parser = sub.add_parser("erase", help="erase everything held about a user (leaves a "
                                          "receipt and a hashed do-not-contact entry)")
    add_common(parser)
    parser.add_argument("--broker", help="Kafka bootstrap: send the erase event the worker "
                                         "turns into a table tombstone")
    parser.add_argument("--topic-prefix", help="PREFIX.events (as the worker's --topic-prefix)")
    parser.add_argument("--decisions", action="append", default=[], metavar="FILE",
                        help="also remove the user's records from this decision log file")
    parser.add_argument("--json", action="store_true", help="print the receipt as one JSON line")
    parser.set_defaults(run=run)


def eraser_for(args: argparse.Namespace, client: Any, forget: Any = None) -> Any:
    from config.loader import load_config
    from scenetrigger.ops.erasure import Eraser

    return Eraser(client, load_config(args.config), args.tags_prefix, args.dead_letter_stream,
                  forget)


def run(args: argparse.Namespace) -> int:
    from scenetrigger.cli.ops.users import run_async

    receipt = run_async(_main(args), args.redis_url)
    if args.decisions:
        from channels.feedback.decisions import FileDecisionLog

        erased = 0
        for path in args.decisions:
            log = FileDecisionLog(path)
            erased += log.erase(args.user)
            log.close()
        receipt["removed"]["decision_log_records"] = erased
    if args.json:
        print(orjson.dumps(receipt).decode())
    else:
        print(orjson.dumps(receipt, option=orjson.OPT_INDENT_2).decode())
        engine = receipt.get("engine_state")
        print(f"erased: {sum(receipt['removed'].values()):,} items"
              + (f"; engine state: {engine}" if engine else ""), file=sys.stderr)
    return 0


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from channels.redis_client import redis_client
    from config.hash_keys import startup_check

    startup_check("erase")  # refuses without a key when one is required
    client = redis_client(redis_url_or_env(args.redis_url), decode_responses=True)
    producer = None
    try:
        forget = None
        if args.broker:
            from agents.engine_host import ERASE
            from agents.kafka_clients import new_producer
            from agents.topics import bootstrap_servers, topic_name
            from channels.feedback.decisions import erasure_record

            producer = new_producer(bootstrap_servers(args.broker))
            await producer.start()
            topic = topic_name(args.topic_prefix, "events")
            started = producer

            decisions = topic_name(args.topic_prefix, "decisions")
            profiles = await _existing(bootstrap_servers(args.broker),
                                       topic_name(args.topic_prefix, "profiles"))

            async def forget_in_worker(user_id: str, now_ms: int) -> None:
                event = {"user_id": user_id, "ts": now_ms, "type": ERASE}
                await started.send_and_wait(topic, orjson.dumps(event), key=user_id.encode())
                await started.send_and_wait(  # the decision log's record of it
                    decisions, erasure_record(user_id, now_ms, "cli").encode(),
                    key=user_id.encode())
                if profiles is not None:  # the live profile's tombstone (compacted topic)
                    await started.send_and_wait(profiles, None, key=user_id.encode())

            forget = forget_in_worker
        receipt: dict[str, Any] = await eraser_for(args, client, forget).erase(args.user)
        return receipt
    finally:
        if producer is not None:
            await producer.stop()
        await client.aclose()


async def _existing(bootstrap: str, topic: str) -> str | None:
    """``topic`` if the cluster has it (a send to a missing one would wait)."""
    from agents.kafka_clients import open_client
    from agents.replication import existing_topics

    client = await open_client(bootstrap)
    try:
        return topic if topic in await existing_topics(client, [topic]) else None
    finally:
        await client.close()
