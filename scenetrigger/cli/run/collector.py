"""``scenetrigger collector``: the HTTP collector (``POST /events``) in front of Kafka.

``$SCENETRIGGER_COLLECTOR_TOKEN`` is the public token browsers send;
``$SCENETRIGGER_IDENTIFY_TOKEN`` the shop backend's, the only one whose
requests may carry unsigned ``identify`` events (docs/security.md, "Identity").
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from aiohttp import web

from agents.collector import (
    CollectorMetrics,
    CollectorSettings,
    KafkaPublisher,
    create_collector_app,
)
from agents.kafka_clients import new_producer
from agents.producer import ensure_topics
from agents.topics import DEFAULT_PARTITIONS, bootstrap_servers
from config.tokens import IDENTIFY_TOKEN_ENV
from scenetrigger.cli import config_follow
from scenetrigger.cli.support import (
    add_max_future_argument,
    add_replication_argument,
    add_topic_arguments,
    produce_topics,
)
from triggers.errors import SceneTriggerError

TOKEN_ENV = "SCENETRIGGER_COLLECTOR_TOKEN"  # noqa: S105 - the name of an env var


def register(sub: Any) -> None:
    parser = sub.add_parser("collector", help="HTTP collector: POST /events to the events topic")
    parser.add_argument("--broker", help="Kafka bootstrap (default: $SCENETRIGGER_KAFKA, "
                                         "else 127.0.0.1:9092)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8088, help="listen port (default 8088)")
    add_topic_arguments(parser, "rejected events")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                        help="partitions of topics this command creates (default 4)")
    add_replication_argument(parser)
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                        help="largest accepted request body (default 8 MiB)")
    parser.add_argument("--max-events", type=int, default=10_000,
                        help="most events in one request (default 10000)")
    parser.add_argument("--no-auth", action="store_true",
                        help=f"accept posts without a token (without it the collector refuses "
                             f"to start unless ${TOKEN_ENV} is set)")
    parser.add_argument("--read-timeout", type=float, default=30.0,
                        help="seconds a request body may take to arrive (default 30)")
    parser.add_argument("--max-concurrent", type=int, default=32,
                        help="requests read at once; more are answered 503 busy (default 32)")
    parser.add_argument("--config", help="config file when the store has no version yet "
                        "(validated and reported; the collector's limits are its flags)")
    add_max_future_argument(parser)
    config_follow.add_arguments(parser)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> CollectorSettings:
    if args.max_body_bytes < 1 or args.max_events < 1 or args.max_concurrent < 1:
        raise SceneTriggerError("--max-body-bytes, --max-events and --max-concurrent "
                                "must be >= 1")
    if not args.read_timeout > 0:
        raise SceneTriggerError("--read-timeout must be > 0")
    token = os.environ.get(TOKEN_ENV) or None
    identify_token = os.environ.get(IDENTIFY_TOKEN_ENV) or None
    if identify_token is not None and identify_token == token:
        raise SceneTriggerError(f"${IDENTIFY_TOKEN_ENV} must differ from ${TOKEN_ENV}: browsers "
                                "hold the collector's token, identify needs the backend's")
    if token is None and not args.no_auth:
        raise SceneTriggerError(f"no token: set ${TOKEN_ENV} (clients send 'Authorization: "
                                "Bearer <token>'), or pass --no-auth to accept anonymous posts")
    topics = produce_topics(args)
    return CollectorSettings(
        topics=topics,
        max_body_bytes=args.max_body_bytes,
        max_events=args.max_events,
        token=token,
        identify_token=identify_token,
        read_timeout_s=args.read_timeout,
        max_concurrent=args.max_concurrent,
        max_future_ms=args.max_future,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    bootstrap = bootstrap_servers(args.broker)
    try:
        asyncio.run(ensure_topics(bootstrap, [settings.topics.events,
                                              settings.topics.dead_letters], args.partitions,
                                  replication=args.replication_factor))
    except OSError as exc:
        raise SceneTriggerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None

    async def make_app() -> web.Application:
        # The producer (and the config store's client) must be built on the
        # loop that serves the app.
        from config.reload import ReloadMetrics

        metrics = CollectorMetrics.create()
        reloader = await config_follow.initial_reloader(
            args.config, config_follow.open_store(args.config_store, args.broker,
                                                  args.topic_prefix),
            ReloadMetrics.on(metrics.registry))
        app = create_collector_app(KafkaPublisher(new_producer(bootstrap)), settings,
                                   metrics)

        async def follow(_app: web.Application) -> Any:
            # The collector applies nothing of a new version (its limits are
            # flags); it validates it and reports the digest like every process.
            async with config_follow.following(reloader, config_follow.interval_ms(args)):
                yield

        app.cleanup_ctx.append(follow)
        return app

    auth = "token required" if settings.token else "NO AUTH (--no-auth): anyone may post"
    print(f"collector on http://{args.host}:{args.port}/events -> {settings.topics.events} "
          f"at {bootstrap}, {auth}", flush=True)
    # keepalive_timeout: an idle connection is closed; the body has read_timeout.
    web.run_app(make_app(), host=args.host, port=args.port, print=None,
                keepalive_timeout=15)
    return 0
