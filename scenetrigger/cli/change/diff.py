"""``scenetrigger diff BASE CANDIDATE EVENTS``: what a config change would do
on recorded events. Both configs replay the events with delivery dry-run (as
``replay --deliver dry-run`` does); per scene the triggers of each side, added
and removed, users gained and lost with example users; per segment, style and
content variant the messages and suppressions of each side. Zero rows are kept."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

import orjson

from config.loader import load_config, load_config_text
from config.models import AppConfig
from scenetrigger.cli.support import positive, progress_bar
from scenetrigger.runtime.sources import FORMATS, open_input, pick_format, read_events
from scenetrigger.runtime.whatif import Side, compare, render, run_side
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "diff", help="what-if: compare two configs on recorded events",
        description="Replay EVENTS under BASE and CANDIDATE (delivery dry-run) and compare "
                    "triggers per scene and messages per segment, style and variant.")
    parser.add_argument("base", help="the config running now (a file, or with "
                        "--config-store a version: vN, N or current)")
    parser.add_argument("candidate", help="the config you consider (a file or a version)")
    parser.add_argument("events", help="events file (JSONL, rees46 CSV, OTTO JSONL)")
    parser.add_argument("--format", choices=FORMATS, default="auto")
    parser.add_argument("--catalog", help="product catalog file for content (as replay's)")
    parser.add_argument("--examples", type=positive, default=3,
                        help="example users per change (default 3)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument("--jobs", type=positive, default=os.cpu_count() or 1,
                        help="processes (default: the cores; the output is the same): with 2 "
                             "or more the two configs replay side by side, one process each, "
                             "without progress bars. Each side stays one process (delivery "
                             "dry-run needs every user's state in trigger order), so more "
                             "than 2 gains nothing")
    parser.add_argument("--config-store", metavar="STORE",
                        help="read vN (or N) / current from the versioned config: 'kafka' or a "
                             "directory (see `config push`)")
    parser.add_argument("--broker", help="with --config-store kafka: Kafka bootstrap")
    parser.add_argument("--topic-prefix", help="with --config-store kafka: PREFIX.config")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.events == "-":
        raise SceneTriggerError("diff reads EVENTS twice: give a file, not -")
    base_config = _config(args.base, args)
    candidate_config = _config(args.candidate, args)
    if args.jobs > 1:
        base, candidate = _sides_in_parallel(base_config, candidate_config, args)
    else:
        base = _side("base", base_config, args)
        candidate = _side("candidate", candidate_config, args)
    result = compare(base_config, candidate_config, base, candidate, args.examples)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(result))
    changed = sum(1 for row in result["scenes"].values() if row["added"] or row["removed"])
    print(f"diff: {base.summary.events_read:,} events; {changed} of {len(result['scenes'])} "
          "scene(s) change", file=sys.stderr)
    return 0


def _config(spec: str, args: argparse.Namespace) -> AppConfig:
    """A config file, or with --config-store a stored version (vN or N, as
    ``config show`` takes it, or current); a file of that name wins."""
    if args.config_store and re.fullmatch(r"v?\d+|current", spec) and \
            not os.path.exists(spec):
        return load_config_text(_stored_text(spec, args), source=f"config {spec}")
    return load_config(spec)


def _stored_text(spec: str, args: argparse.Namespace) -> str:
    from config.versions import current
    from scenetrigger.cli.config_follow import open_store

    store = open_store(args.config_store, args.broker, args.topic_prefix)
    assert store is not None

    async def read() -> list[Any]:
        try:
            return await store.versions()
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                await close()

    versions = asyncio.run(read())
    found = current(versions) if spec == "current" else next(
        (v for v in versions if str(v.version) == spec.removeprefix("v")), None)
    if found is None:
        raise SceneTriggerError(f"no config version {spec} in {args.config_store}")
    return str(found.text)


def _side(label: str, config: AppConfig, args: argparse.Namespace) -> Side:
    with open_input(args.events) as (stream, size):
        fmt, lines = pick_format(args.format, stream, args.events)
        progress = progress_bar(size, args.no_progress, label)
        try:
            records = read_events(lines, fmt, config.engine.max_line_bytes, config.id_limits())
            return run_side(config, records, args.catalog,
                            (lambda _n: progress.update_to(stream.tell())) if progress else None)
        finally:
            if progress is not None:
                progress.close()


def _sides_in_parallel(base_config: AppConfig, candidate_config: AppConfig,
                       args: argparse.Namespace) -> tuple[Side, Side]:
    """``--jobs 2+``: the candidate side in a forked process, the base here;
    each side is the same one-process run as with ``--jobs 1``. Forked, so
    the configs are inherited, not pickled (compiled engine classes do not
    unpickle); only the plain :class:`Side` comes back."""
    quiet = argparse.Namespace(**{**vars(args), "no_progress": True})  # two bars would mix
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_side_process, args=(sender, candidate_config, quiet), daemon=True)
    child.start()
    sender.close()
    try:
        base = _side("base", base_config, quiet)
    except BaseException:
        child.kill()  # its answer is not needed any more
        child.join()
        raise
    try:
        answer = receiver.recv()
    except EOFError:
        raise RuntimeError("diff: the candidate's process died") from None
    finally:
        child.join()
    if isinstance(answer, BaseException):
        raise answer
    if isinstance(answer, str):
        raise RuntimeError(f"diff: the candidate's process failed: {answer}")
    assert isinstance(answer, Side)
    return base, answer


def _side_process(conn: Connection, config: AppConfig, args: argparse.Namespace) -> None:
    answer: Side | BaseException | str
    try:
        answer = _side("candidate", config, args)
        answer.summary.pending = []  # engine classes (maybe compiled); diff does not show them
    except SceneTriggerError as exc:  # a user's error (a bad catalog): shown as one process would
        answer = exc
    except BaseException:
        answer = traceback.format_exc()
    try:
        conn.send(answer)
    except Exception:  # an exception that does not pickle
        conn.send(traceback.format_exc())
    conn.close()
