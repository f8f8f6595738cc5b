"""``scenetrigger export TOPIC``: a topic's record values as JSON lines (one
line per event of a batched events record), e.g. a worker's triggers for
``scenetrigger report``:

    scenetrigger export shop.triggers --out triggers.jsonl --sort-by-ts
    scenetrigger export shop.events --out events.jsonl --sort-by-ts
    scenetrigger report triggers.jsonl events.jsonl

Reads every partition from its beginning to the end it had when the export
started (no consumer group, nothing committed). ``--sort-by-ts`` merges the
partitions by each value's ``ts`` (stable; values without an integer ``ts``
come first, where replay or report reject them with a reason) and holds the
topic in memory to do so.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, BinaryIO

import orjson

from agents.export import topic_records
from agents.record_batching import record_values
from agents.topics import bootstrap_servers


def register(sub: Any) -> None:
    parser = sub.add_parser("export", help="write a topic's values as JSON lines "
                                           "(e.g. a worker's triggers, for report)")
    parser.add_argument("topic", help="topic name, e.g. scenetrigger-triggers or PREFIX.triggers")
    parser.add_argument("--broker", help="Kafka bootstrap (default: $SCENETRIGGER_KAFKA)")
    parser.add_argument("--out", help="output file (default: stdout)")
    parser.add_argument("--sort-by-ts", action="store_true",
                        help="order lines by the values' ts (holds the topic in memory)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to reach the end of the topic (default 300)")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.out:
        with open(args.out, "wb") as out:
            written = asyncio.run(_export(args, out))
    else:
        written = asyncio.run(_export(args, sys.stdout.buffer))
    print(f"export: {written:,} values from {args.topic}", file=sys.stderr)
    return 0


def sort_key(value: bytes) -> int:
    try:
        ts = orjson.loads(value).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return -(2**63)
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else -(2**63)


async def _export(args: argparse.Namespace, out: BinaryIO) -> int:
    bar: Any = None

    def on_total(total: int) -> None:
        nonlocal bar
        if not args.no_progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="rec", unit_scale=True, file=sys.stderr,
                       desc=args.topic)

    held: list[bytes] = []
    written = 0
    try:
        async for record in topic_records(bootstrap_servers(args.broker), args.topic,
                                          args.timeout, on_total):
            for value in record_values((record.value or b"").replace(b"\n", b" ")):
                if args.sort_by_ts:
                    held.append(value)
                else:
                    out.write(value + b"\n")
                    written += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    for value in sorted(held, key=sort_key):
        out.write(value + b"\n")
        written += 1
    return written
