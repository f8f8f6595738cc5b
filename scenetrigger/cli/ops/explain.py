"""``scenetrigger explain USER``: why a user got a message, or why not.

From a recorded stream (``--events FILE``, the same as ``replay FILE
--explain USER``): the user's events, each trigger and the scene rule behind
it, the scenes that refused or did not fire and what was missing, each
delivery decision with its deciding rule and figures, the scene windows now
and the user's tags. From a live deployment (``--broker``): the same read
from the events, triggers and decisions topics.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("explain", help="one user's timeline: events, triggers, "
                                            "refusals and each delivery decision with its rule")
    parser.add_argument("user", help="the user_id")
    parser.add_argument("--events", help="a recorded stream to replay (JSONL, rees46 CSV, OTTO)")
    parser.add_argument("--format", choices=("auto", "jsonl", "rees46", "otto"), default="auto")
    parser.add_argument("--config", help="config file (default: the shipped scenes)")
    parser.add_argument("--catalog", help="product catalog file for content (default: none)")
    parser.add_argument("--broker", help="read a live deployment's topics instead "
                                         "(Kafka bootstrap; default $SCENETRIGGER_KAFKA)")
    parser.add_argument("--topic-prefix", help="with --broker: PREFIX.events/.triggers/"
                                               ".decisions (default: the shared names)")
    parser.add_argument("--app-id",
                        help="with --broker: the workers' --app-id (their state table's "
                             "changelog is APP_ID-user-state-changelog; default: the "
                             "--topic-prefix, else scenetrigger, as the worker's)")
    parser.add_argument("--redis-url", help="with --broker: also the strategies' tags and "
                                            "the lead score from this Redis")
    parser.add_argument("--tags-prefix", default="scenetrigger:",
                        help="with --redis-url: the strategies' Redis prefix (as journeys "
                             "--redis-prefix; default scenetrigger:)")
    parser.add_argument("--timeout", type=float, default=60,
                        help="with --broker: seconds to read each topic to its end")
    parser.add_argument("--config-store", metavar="STORE",
                        help="also name the config experiment arm the user is in: 'kafka' "
                             "(PREFIX.config on --broker) or a directory")
    parser.add_argument("--json", action="store_true", help="print the timeline as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from config.loader import load_config

    config = load_config(args.config)
    if args.events and args.broker and args.config_store != "kafka":
        # (with --config-store kafka, --broker is where the config versions are)
        raise SceneTriggerError("explain: give --events FILE or --broker, not both")
    if args.events:
        timeline = replay_timeline(args.events, args.format, config, args.user, args.catalog)
    elif args.broker:
        from scenetrigger.ops.explain_live import live_timeline

        app_id = args.app_id or args.topic_prefix or "scenetrigger"  # the worker's default
        timeline = live_timeline(args.broker, args.topic_prefix, config, args.user,
                                 args.timeout, app_id, redis_url=args.redis_url,
                                 tags_prefix=args.tags_prefix)
    else:
        raise SceneTriggerError("explain: give --events FILE (a replay) or --broker (live)")
    arm = experiment_arm(args, args.user) if args.config_store else None
    print_timeline(timeline, args.json, arm)
    return 0


def experiment_arm(args: argparse.Namespace, user: str) -> dict[str, Any] | None:
    """The running config experiment and the user's arm in it (None: none runs)."""
    import asyncio

    from config.experiment import CANDIDATE, in_candidate
    from config.versions import running
    from scenetrigger.cli.config_follow import open_store

    store = open_store(args.config_store, args.broker, args.topic_prefix)
    assert store is not None

    async def read() -> Any:
        try:
            return running(await store.versions())
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                await close()

    found = asyncio.run(read())
    if found is None:
        return None
    candidate, base = found
    spec = candidate.experiment
    arm = "candidate" if in_candidate(candidate.version, spec.share, user) else "base"
    return {"user": user, "version": candidate.version, "base": base.version, "share": spec.share,
            "arm": arm, "runs": candidate.version if arm == CANDIDATE else base.version}


def replay_timeline(path: str, fmt: str, config: Any, user: str,
                    catalog: str | None = None) -> Any:
    from scenetrigger.ops.explain import explain_replay
    from scenetrigger.runtime.sources import open_input, pick_format, read_events

    with open_input(path) as (stream, _size):
        chosen, lines = pick_format(fmt, stream, path)
        records = read_events(lines, chosen, config.engine.max_line_bytes, config.id_limits())
        return explain_replay(records, config, [user], catalog)[user]


def print_timeline(timeline: Any, as_json: bool, arm: dict[str, Any] | None = None) -> None:
    if as_json:
        shown = timeline.to_dict() | ({"config_experiment": arm} if arm is not None else {})
        sys.stdout.buffer.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2) + b"\n")
        return
    if arm is not None:
        print(f"config experiment v{arm['version']} ({arm['share']:.0%} of users against "
              f"v{arm['base']}): {arm['user']} is in the {arm['arm']} arm (runs v{arm['runs']})")
    print(timeline.render())
