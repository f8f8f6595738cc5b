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
    parser.add_argument("--json", action="store_true", help="print the timeline as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from config.loader import load_config

    config = load_config(args.config)
    if args.events and args.broker:
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
    print_timeline(timeline, args.json)
    return 0


def replay_timeline(path: str, fmt: str, config: Any, user: str,
                    catalog: str | None = None) -> Any:
    from scenetrigger.ops.explain import explain_replay
    from scenetrigger.runtime.sources import open_input, pick_format, read_events

    with open_input(path) as (stream, _size):
        chosen, lines = pick_format(fmt, stream, path)
        records = read_events(lines, chosen, config.engine.max_line_bytes, config.id_limits())
        return explain_replay(records, config, [user], catalog)[user]


def print_timeline(timeline: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(timeline.to_dict(), option=orjson.OPT_INDENT_2)
                                + b"\n")
    else:
        print(timeline.render())
