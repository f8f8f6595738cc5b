"""``scenetrigger config push|log|show|promote|rollback``: the versioned config.

``push FILE --message TEXT`` validates FILE (every problem with file, line,
scene and field; nothing is stored when one is found) and stores it as the
next version: digest, author (the name of the admin token in
``$SCENETRIGGER_TOKEN``), time, message and the diff from the current one.
``rollback N`` stores version N's text again as a new version. Every process
started with ``--config-store`` follows the current version. ``push FILE
--experiment 10%`` stores FILE as a candidate for a hash-chosen share of the
users (config.experiment); ``promote`` or ``rollback`` (no N: to its base)
ends it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from config.experiment import DEFAULT_HORIZON_MS, parse_share
from config.versions import (
    TOKEN_ENV,
    ConfigVersion,
    VersionStore,
    author_of,
    current,
    promote,
    push,
    push_experiment,
)
from config.versions import rollback as rollback_to
from scenetrigger.cli.config_follow import KAFKA, open_store
from scenetrigger.cli.support import add_replication_argument, duration
from triggers.errors import ConfigError, SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="versioned config: push, log, show, promote, rollback",
                            description="Store, list, show and roll back config versions.")
    _common(parser, KAFKA, None, False)
    # The same options after the verb too (`config push FILE --store DIR`).
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS, argparse.SUPPRESS, argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser("push", parents=[common],
                         help="validate FILE and store it as the current version")
    p.add_argument("file")
    p.add_argument("--message", "-m", required=True, help="why (kept with the version)")
    p.add_argument("--experiment", metavar="SHARE",
                   help="run FILE as a candidate for this hash-chosen share of users (10%% or "
                        "0.1, at most 50%%) against the current version; `config promote` or "
                        "`config rollback` ends it (docs/measurement.md, Experiments)")
    p.add_argument("--horizon", type=duration, default=DEFAULT_HORIZON_MS,
                   help="with --experiment: its fixed horizon; `report --experiment` decides "
                        "only after it (default 14d)")
    pr = verbs.add_parser("promote", parents=[common],
                          help="end the running experiment: its candidate for every user")
    pr.add_argument("--message", "-m", default="", help="why (default: 'promote vN')")
    verbs.add_parser("log", parents=[common], help="list the versions, newest first")
    s = verbs.add_parser("show", parents=[common], help="print one version (text and diff)")
    s.add_argument("version", help="a version number, or 'current'")
    s.add_argument("--text", action="store_true",
                   help="print only the config text (to save it as a file)")
    r = verbs.add_parser("rollback", parents=[common],
                         help="make an old version current again (as a new one); without "
                              "a version, end the running experiment with its base")
    r.add_argument("version", type=int, nargs="?")
    r.add_argument("--message", "-m", default="", help="why (default: 'rollback to vN')")
    parser.set_defaults(run=run)


def _common(parser: argparse.ArgumentParser, store: Any, none: Any, false: Any) -> None:
    parser.add_argument("--store", default=store,
                        help="'kafka' (the PREFIX.config topic, default) or a directory")
    parser.add_argument("--broker", default=none,
                        help="Kafka bootstrap (default: $SCENETRIGGER_KAFKA)")
    parser.add_argument("--topic-prefix", default=none,
                        help="PREFIX.config (default: the shared name)")
    parser.add_argument("--json", action="store_true", default=false, help="print JSON")
    add_replication_argument(parser, none)


def run(args: argparse.Namespace) -> int:
    store = open_store(args.store, args.broker, args.topic_prefix, args.replication_factor)
    assert store is not None
    args.file_text = None
    if args.verb == "push":
        try:
            args.file_text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SceneTriggerError(f"cannot read {args.file}: {exc}") from None
    return asyncio.run(_run(args, store))


async def _run(args: argparse.Namespace, store: VersionStore) -> int:
    try:
        return await _verb(args, store)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            await close()


async def _verb(args: argparse.Namespace, store: VersionStore) -> int:
    if args.verb == "push":
        author = author_of(os.environ.get(TOKEN_ENV))
        try:
            if args.experiment is not None:
                version = await push_experiment(store, args.file_text, args.message, author,
                                                parse_share(args.experiment), args.horizon,
                                                source=args.file)
            else:
                version = await push(store, args.file_text, args.message, author,
                                     source=args.file)
        except ConfigError as exc:
            print(f"{args.file}: refused, nothing stored: {len(exc.problems)} error(s)",
                  file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        return _done(args, version)
    if args.verb == "promote":
        author = author_of(os.environ.get(TOKEN_ENV))
        return _done(args, await promote(store, args.message, author))
    if args.verb == "rollback":
        author = author_of(os.environ.get(TOKEN_ENV))
        return _done(args, await rollback_to(store, args.version, args.message, author))
    versions = await store.versions()
    if args.verb == "log":
        if args.json:
            _json([v.summary() for v in reversed(versions)])
            return 0
        for v in reversed(versions):
            back = f" (rollback to v{v.rollback_of})" if v.rollback_of and \
                f"v{v.rollback_of}" not in v.message else ""
            if v.experiment is not None:
                back += (f" [experiment: {v.experiment.share:.0%} of users against "
                         f"v{v.experiment.base}]")
            print(f"v{v.version:<5} {v.digest[:12]}  {_when(v.time_ms)}  {v.author:<12} "
                  f"{v.message}{back}")
        if not versions:
            print("no config versions yet", file=sys.stderr)
        return 0
    wanted = current(versions) if args.version == "current" else next(
        (v for v in versions if str(v.version) == args.version.lstrip("v")), None)
    if wanted is None:
        raise SceneTriggerError(f"no config version {args.version}")
    if args.json:
        _json({**wanted.summary(), "text": wanted.text, "diff": wanted.diff})
        return 0
    if args.text:
        sys.stdout.write(wanted.text)
        return 0
    print(f"# v{wanted.version} {wanted.digest} by {wanted.author} at "
          f"{_when(wanted.time_ms)}: {wanted.message}")
    sys.stdout.write(wanted.text if wanted.text.endswith("\n") else wanted.text + "\n")
    if wanted.diff:
        print("# diff from the version before:")
        sys.stdout.write(wanted.diff)
    return 0


def _done(args: argparse.Namespace, version: ConfigVersion) -> int:
    if args.json:
        _json(version.summary())
    else:
        print(f"v{version.version} {version.digest} by {version.author}: {version.message}")
        if version.experiment is not None:
            print(f"experiment: v{version.version} runs for {version.experiment.share:.0%} of "
                  f"users (by hash), v{version.experiment.base} for the others")
    return 0


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
