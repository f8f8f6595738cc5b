"""Small pieces several subcommands share: argument types, opening an
events input (a file or ``-``) with its format, and the byte progress bar of
commands that read a large input file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from typing import Any

from agents.producer import ProduceTopics
from agents.record_batching import BatchLimits
from agents.topics import DEAD_LETTERS, EVENTS
from triggers.durations import parse_duration_ms
from triggers.errors import SceneTriggerError
from triggers.host import DEFAULT_MAX_FUTURE_MS


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_max_future_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-future``: the bound of event time against the wall clock
    (``triggers.host.check_future``; the worker's is ``engine.max_future``)."""
    parser.add_argument("--max-future", type=_max_future, default=DEFAULT_MAX_FUTURE_MS,
                        metavar="DURATION|off",
                        help="dead-letter (future_ts) events stamped more than this ahead of "
                             "the wall clock (default 1h; off: no bound)")


def _max_future(text: str) -> int | None:
    return None if text == "off" else duration(text)


def duration(text: str) -> int:
    """An argparse type: a duration (``500ms``, ``5s``, ``2m`` or integer ms) in ms."""
    try:
        return parse_duration_ms(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class ByteProgress:
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update_to(self, position: int) -> None:
        self._bar.update(position - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def progress_bar(size: int | None, disabled: bool, desc: str) -> ByteProgress | None:
    """Bytes read of the input, on stderr, only when a person is watching."""
    if disabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return ByteProgress(tqdm(total=size, unit="B", unit_scale=True, file=sys.stderr, desc=desc))


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """How events are grouped into Kafka records (``agents.record_batching``)."""
    defaults = BatchLimits()
    parser.add_argument("--batch-events", type=positive, default=defaults.max_events,
                        help="most events in one Kafka record (default "
                             f"{defaults.max_events}; 1: one event per record, keyed by user_id)")
    parser.add_argument("--batch-bytes", type=positive, default=defaults.max_bytes,
                        help=f"most event bytes in one record (default {defaults.max_bytes})")
    parser.add_argument("--linger", type=duration, default=defaults.linger_ms,
                        help="longest a record waits for more events "
                             f"(default {defaults.linger_ms}ms)")


def batch_limits(args: argparse.Namespace) -> BatchLimits:
    return BatchLimits(max_events=args.batch_events, max_bytes=args.batch_bytes,
                       linger_ms=args.linger)


def add_replication_argument(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """``--replication-factor`` of the topics a command creates (agents.replication)."""
    parser.add_argument("--replication-factor", type=positive, default=default,
                        help="replicas of each topic this command creates (default: min(3, "
                             "brokers in the cluster); min.insync.replicas is one less, "
                             "at least 1)")


def add_topic_arguments(parser: argparse.ArgumentParser, rejected: str) -> None:
    """The topics a command writes events to: named alone, or by the
    ``--topic-prefix`` the worker is given (PREFIX.events, PREFIX.dead-letters)."""
    parser.add_argument("--topic-prefix",
                        help="write to PREFIX.events and PREFIX.dead-letters, the topics "
                             "`worker --topic-prefix PREFIX` reads (and, with --config-store "
                             "kafka, follow PREFIX.config)")
    parser.add_argument("--topic", help=f"events topic (default PREFIX.events, else {EVENTS})")
    parser.add_argument("--dead-letter-topic",
                        help=f"topic for {rejected} (default PREFIX.dead-letters, else "
                             f"{DEAD_LETTERS})")


def produce_topics(args: argparse.Namespace) -> ProduceTopics:
    prefix = args.topic_prefix
    topics = ProduceTopics(
        events=args.topic or (f"{prefix}.events" if prefix else EVENTS),
        dead_letters=args.dead_letter_topic or (f"{prefix}.dead-letters" if prefix
                                                else DEAD_LETTERS))
    if topics.events == topics.dead_letters:
        raise SceneTriggerError("the events and dead-letter topics must differ")
    return topics


def run_stoppable(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run(main)``, except that the tasks still pending when
    ``main`` returns are waited at most :data:`channels.infra_retry.STOP_WAIT_S`
    (asyncio.run waits for them without bound: one that swallows its
    cancellation would keep a stopped process alive until it is killed)."""
    import asyncio
    import logging

    from channels.infra_retry import STOP_WAIT_S

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            _, left = loop.run_until_complete(asyncio.wait(pending, timeout=STOP_WAIT_S))
            if left:
                logging.getLogger("scenetrigger.infra").warning(
                    "exiting without tasks that did not end", extra={
                        "tasks": sorted(t.get_name() for t in left), "waited_s": STOP_WAIT_S})
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
