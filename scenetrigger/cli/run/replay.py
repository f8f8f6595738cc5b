"""``scenetrigger replay EVENTS``: what a config would have fired on a recorded stream."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import orjson

from channels.feedback.decisions import DEFAULT_MAX_BYTES, FileDecisionLog, refusal_record
from config.loader import load_config
from scenetrigger.cli.support import positive, progress_bar
from scenetrigger.runtime.replay import (
    ReplaySummary,
    jsonl_reject_writer,
    jsonl_trigger_writer,
    new_host,
    replay,
)
from scenetrigger.runtime.replay_shards import replay_sharded
from scenetrigger.runtime.sources import FORMATS, open_input, pick_format, read_for
from triggers.audiences.record import AudienceChange, audience_line
from triggers.errors import SceneTriggerError
from triggers.events import Refusal, Trigger


def register(sub: Any) -> None:
    parser = sub.add_parser("replay", help="replay a recorded clickstream through the scenes")
    parser.add_argument("events", help="events file (JSONL, rees46 CSV, OTTO JSONL) or - for stdin")
    parser.add_argument("--format", choices=FORMATS, default="auto")
    parser.add_argument("--config", help="config file (default: the shipped scenes)")
    parser.add_argument("--out", help="write triggers here (default: stdout)")
    parser.add_argument("--rejects", help="write rejected lines here with line number and reason")
    parser.add_argument("--summary-json", help="also write the summary as JSON to this file")
    parser.add_argument(
        "--advance-to", type=int, help="at the end, move the clock to this ts (ms) first"
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument("--jobs", type=positive, default=os.cpu_count() or 1,
                        help="processes, each replaying a share of the users (default: the "
                             "cores; the output is the same). One process with stdin, an "
                             "audiences: section, "
                             "--rejects, --deliver or --explain")
    parser.add_argument("--deliver", choices=("dry-run", "live"),
                        help="also push each trigger through content, policy and channels")
    parser.add_argument("--catalog", help="with --deliver: product catalog file (CSV, JSONL, "
                        "rees46 CSV) read into memory instead of Redis")
    parser.add_argument("--catalog-changes", metavar="FILE",
                        help="a catalog history (JSONL of {\"ts\": ms, \"record\": {...}}) "
                             "merged into the events by time: the catalog scenes fan out "
                             "from it (docs/catalog.md); one process")
    parser.add_argument("--redis-url", help="with --deliver live: Redis for policy, catalog, dead letters and the inbox channels")
    parser.add_argument("--explain", metavar="USER",
                        help="print USER's timeline (events, triggers, refusals, delivery "
                             "decisions with their rules) instead of the trigger lines")
    parser.add_argument("--json", action="store_true", help="with --explain: as JSON")
    parser.add_argument("--decisions", help="with --deliver: write the decision log (one JSON "
                        "line per outcome with its deciding rule and figures) to this file")
    parser.add_argument("--decisions-max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help="rotate the decision log to FILE.1 past this size (default 64 MiB)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.explain is not None:
        from scenetrigger.cli.ops.explain import print_timeline, replay_timeline

        timeline = replay_timeline(args.events, args.format, load_config(args.config),
                                   args.explain, args.catalog)
        print_timeline(timeline, args.json)
        return 0
    if args.decisions and not args.deliver:
        raise SceneTriggerError("--decisions needs --deliver (the decisions are delivery's)")
    config = load_config(args.config)
    if args.jobs > 1 and args.events != "-" and not (args.rejects or args.deliver
                                                      or config.audiences
                                                      or args.catalog_changes):
        return _run_sharded(args, config)
    # Trigger lines carry no profile fields: only delivery (content, quiet
    # hours) and scenes' user filters read the profiles (see new_host).
    host = new_host(config, profiles=args.deliver is not None)
    with open_input(args.events) as (stream, size), _open_out(args.out) as out, \
            _open_optional(args.rejects) as rejects, \
            _delivery(args, config, host.engine) as delivery:
        fmt, lines = pick_format(args.format, stream, args.events)
        progress = progress_bar(size, args.no_progress, "replay")
        if host.audiences is not None:  # audience lines ("kind": "audience") among the triggers
            host.audiences.sink = _audience_writer(out)
        try:
            summary = replay(
                _with_catalog(args, config, read_for(host, lines, fmt)),
                host,
                jsonl_trigger_writer(out) if delivery is None else _delivering_writer(out,
                                                                                      delivery),
                jsonl_reject_writer(rejects) if rejects is not None else None,
                advance_to=args.advance_to,
                on_progress=(lambda _n: progress.update_to(stream.tell())) if progress else None,
                on_refusal=_refusal_writer(delivery),
            )
        finally:
            if progress is not None:
                progress.close()
        waiting = delivery.finish(summary.clock) if delivery is not None else 0
    return _report(args, summary, fmt, delivery, waiting)


def _with_catalog(args: argparse.Namespace, config: Any, records: Iterable[Any]
                  ) -> Iterable[Any]:
    """The records, with ``--catalog-changes`` merged in (catalog_join)."""
    if not args.catalog_changes:
        return records
    from scenetrigger.runtime.catalog_join import joined, new_side, read_history

    with open(args.catalog_changes, "rb") as lines:
        history = read_history(lines, config.engine.max_id_chars)
    return joined(records, history, new_side(config))


def _run_sharded(args: argparse.Namespace, config: Any) -> int:
    """``--jobs N``: the same trigger lines and summary from N processes."""
    with open_input(args.events) as (stream, _size):
        fmt, _lines = pick_format(args.format, stream, args.events)
    with _open_out(args.out) as out:
        summary = replay_sharded(args.events, fmt, config, args.jobs, None, args.advance_to,
                                 write=out.write)
    return _report(args, summary, fmt, None, 0)


def _report(args: argparse.Namespace, summary: ReplaySummary, fmt: str, delivery: Any,
            waiting: int) -> int:
    report = summary.to_dict()
    print(summary.render(), file=sys.stderr)
    if delivery is not None:
        print(delivery.pipeline.render_summary(), file=sys.stderr)
        print(f"  still deferred{waiting:>12,}", file=sys.stderr)
        report["delivery"] = delivery.pipeline.summary() | {"still_deferred": waiting}
    if args.summary_json:
        with open(args.summary_json, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if summary.events_read and not summary.events_taken:
        # A wrong file or format: say so, not a summary of zeros and success.
        reasons = ", ".join(f"{n:,} {r}" for r, n in summary.rejected.most_common())
        print(f"scenetrigger: every line of {args.events} was rejected as {fmt} ({reasons}): "
              "is it the right file and --format (jsonl, rees46, otto)? --rejects FILE "
              "gives each line's reason", file=sys.stderr)
        return 2
    return 0


@contextlib.contextmanager
def _delivery(args: argparse.Namespace, config: Any, engine: Any) -> Iterator[Any]:
    """With ``--deliver``: the delivery pipeline (closed on the way out), else None."""
    if not args.deliver:
        yield None
        return
    from channels.delivery_runtime import SyncDelivery

    decisions = (FileDecisionLog(args.decisions, args.decisions_max_bytes)
                 if args.decisions else None)
    delivery = SyncDelivery(config, args.deliver, engine.store.get, args.catalog, args.redis_url,
                            decisions=decisions)
    try:
        yield delivery
    finally:
        delivery.close()
        if decisions is not None:
            decisions.close()


def _refusal_writer(delivery: Any) -> Callable[[Refusal], None] | None:
    """With ``--decisions``: the engine's refusals (user filters, the trigger
    budget) as decision records, as the worker writes them."""
    log = delivery.pipeline.decisions if delivery is not None else None
    if log is None:
        return None
    return lambda refusal: log.write(refusal_record(refusal))


def _audience_writer(out: IO[bytes]) -> Callable[[AudienceChange], None]:
    def sink(change: AudienceChange) -> None:
        out.write(audience_line(change))

    return sink


def _delivering_writer(out: IO[bytes], delivery: Any) -> Callable[[Trigger], None]:
    """Trigger lines with the delivery outcome appended after the four contract fields."""
    def sink(trig: Trigger) -> None:
        fields = trig.to_dict() | delivery.deliver(trig).fields()
        out.write(orjson.dumps(fields) + b"\n")

    return sink


@contextlib.contextmanager
def _open_out(path: str | None) -> Iterator[IO[bytes]]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb", buffering=1 << 20) as fh:
        yield fh


@contextlib.contextmanager
def _open_optional(path: str | None) -> Iterator[IO[bytes] | None]:
    if path is None:
        yield None
        return
    with open(path, "wb") as fh:
        yield fh
