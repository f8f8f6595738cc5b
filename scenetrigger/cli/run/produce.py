"""``scenetrigger produce FILE``: send a recorded clickstream to the events topic.

Any replay format (JSONL, rees46 CSV, OTTO JSONL; detected like ``replay``).
Valid events go to the events topic, many per record on the partition their
``user_id`` key hashes to (``--batch-events 1``: one event per record, keyed by
``user_id``); rejects go to the dead-letter topic with their reason and line
number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from typing import Any

import orjson

from agents.identity_gate import identify_refused
from agents.kafka_clients import new_producer
from agents.producer import (
    LastLine,
    PipelinedProducer,
    ProduceSummary,
    RateLimiter,
    ensure_topics,
    produce_records,
)
from agents.topics import DEFAULT_PARTITIONS, bootstrap_servers
from config.tokens import IDENTIFY_TOKEN_ENV
from scenetrigger.cli.support import (
    add_batch_arguments,
    add_max_future_argument,
    add_replication_argument,
    add_topic_arguments,
    batch_limits,
    positive,
    produce_topics,
    progress_bar,
)
from scenetrigger.runtime.sources import FORMATS, open_input, pick_format, read_events
from triggers.errors import SceneTriggerError
from triggers.events import DEFAULT_MAX_LINE_BYTES, Event


def register(sub: Any) -> None:
    parser = sub.add_parser("produce", help="send a recorded clickstream to the events topic")
    parser.add_argument("events", help="events file (JSONL, rees46 CSV, OTTO JSONL) or - for stdin")
    parser.add_argument("--format", choices=FORMATS, default="auto")
    parser.add_argument("--broker", help="Kafka bootstrap (default: $SCENETRIGGER_KAFKA, "
                                         "else 127.0.0.1:9092)")
    add_topic_arguments(parser, "rejected lines")
    parser.add_argument("--partitions", type=positive, default=DEFAULT_PARTITIONS,
                        help="partitions of topics this command creates (default 4)")
    add_replication_argument(parser)
    parser.add_argument("--rate", type=_positive_float,
                        help="at most this many events per second (default: as fast as possible)")
    parser.add_argument("--max-line-bytes", type=positive, default=DEFAULT_MAX_LINE_BYTES)
    add_batch_arguments(parser)
    add_max_future_argument(parser)
    parser.add_argument("--catalog", action="store_true",
                        help="the file is JSONL catalog records: send them all (no diff) to the "
                             "compacted catalog topic (--topic, default PREFIX.catalog, else "
                             "scenetrigger-catalog; docs/catalog.md)")
    parser.add_argument("--summary-json", help="also write the summary as JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument("--allow-identify", action="store_true",
                        help=f"send the file's identify lines even unsigned: the operator vouches "
                             f"they come from the shop's backend (needs ${IDENTIFY_TOKEN_ENV}). "
                             "Without it only identify lines signed with that token (identify_sig) "
                             "are sent; the others go to the dead-letter topic "
                             "(identify_unauthorized)")
    parser.set_defaults(run=run)


def identify_admission(allow: bool, env: dict[str, str] | None = None) -> Any:
    """produce's identify rule (docs/security.md, "Identity"): signed lines
    pass; unsigned ones only with ``--allow-identify``, which needs the
    backend's token in the environment (the operator holds the credential)."""
    secret = (os.environ if env is None else env).get(IDENTIFY_TOKEN_ENV) or None
    if allow and secret is None:
        raise SceneTriggerError(f"--allow-identify needs ${IDENTIFY_TOKEN_ENV} (the shop "
                                "backend's identify credential)")

    def admit(event: Event) -> Any:
        return identify_refused(event, secret, trusted=allow)

    return admit


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def run(args: argparse.Namespace) -> int:
    if args.catalog:
        return _run_catalog(args)
    identify_admission(args.allow_identify)  # refuse a bad flag before connecting
    summary = asyncio.run(produce_file(args))
    print(summary.render(), file=sys.stderr)
    if args.summary_json:
        with open(args.summary_json, "wb") as fh:
            fh.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    return 0


async def produce_file(args: argparse.Namespace) -> ProduceSummary:
    bootstrap = bootstrap_servers(args.broker)
    topics = produce_topics(args)
    batching = batch_limits(args)
    try:
        found = await ensure_topics(bootstrap, [topics.events, topics.dead_letters],
                                    args.partitions, replication=args.replication_factor)
    except OSError as exc:
        raise SceneTriggerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    producer = new_producer(bootstrap)
    await producer.start()
    sink = PipelinedProducer(producer)
    stored: Counter[int] = Counter()
    started = time.monotonic()
    try:
        with open_input(args.events) as (stream, size):
            fmt, lines = pick_format(args.format, stream, args.events)
            remembered = LastLine(lines)
            progress = progress_bar(size, args.no_progress, "produce")
            source = "produce:" + ("stdin" if args.events == "-" else os.path.basename(args.events))
            try:
                sent, rejected, reasons = await produce_records(
                    read_events(remembered, fmt, args.max_line_bytes),
                    sink,
                    partitions=found[topics.events],
                    batching=batching,
                    counts=stored,
                    topics=topics,
                    source=source,
                    raw_of=lambda: remembered.last,
                    limiter=RateLimiter(args.rate) if args.rate else None,
                    on_progress=(lambda _n: progress.update_to(stream.tell())) if progress else None,
                    max_future_ms=args.max_future,
                    admit=identify_admission(args.allow_identify),
                )
            finally:
                if progress is not None:
                    progress.close()
    finally:
        await producer.stop()
    return ProduceSummary(
        sent=sent,
        rejected=rejected,
        reasons=dict(reasons),
        partitions=dict(sorted(stored.items())),
        elapsed_ms=int((time.monotonic() - started) * 1000),
        topic=topics.events,
        dead_letter_topic=topics.dead_letters,
    )




def _run_catalog(args: argparse.Namespace) -> int:
    """``produce --catalog``: the catalog stream's plain feed (every record)."""
    from agents.catalog_stream import CatalogTopics, decode_lines, publish_catalog

    if args.events == "-":
        raise SceneTriggerError("produce --catalog reads a file, not stdin")
    topics = CatalogTopics.of(args.topic_prefix, args.topic, args.dead_letter_topic)
    try:
        with open(args.events, "rb") as fh:
            summary = asyncio.run(publish_catalog(
                bootstrap_servers(args.broker), decode_lines(fh), topics,
                source="produce:" + os.path.basename(args.events), diff=False,
                partitions=args.partitions, replication=args.replication_factor))
    except OSError as exc:
        raise SceneTriggerError(f"cannot read {args.events} or reach Kafka: "
                                f"{exc.strerror or exc}") from None
    print(summary.render(), file=sys.stderr)
    if args.summary_json:
        with open(args.summary_json, "wb") as fh:
            fh.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2))
    return 0
