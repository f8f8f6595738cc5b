"""``scenetrigger console``: the operator console (see :mod:`scenetrigger.console.app`).

Embedded mode (``--events FILE``): the file is replayed at ``--rate`` events
per second through the engine and the delivery pipeline (dry-run), and the
page follows it. Kafka mode (``--broker``): the deployment's events,
triggers, decisions and audiences topics are read and followed; a user lookup reads the
topics and the workers' state changelog (as ``explain --broker``). Admin
actions need an admin token (``$SCENETRIGGER_ADMIN_TOKEN`` or
``$SCENETRIGGER_ADMIN_TOKENS``, as ``scenetrigger config``; refused when none
is set). ``--config-store`` is where config versions are pushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from scenetrigger.cli.support import positive
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("console", help="operator console: rates, funnels, decisions, "
                                            "user lookup; admin actions behind a token")
    parser.add_argument("--events", help="embedded mode: replay this recorded stream")
    parser.add_argument("--format", choices=("auto", "jsonl", "rees46", "otto"), default="auto")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="embedded mode: events per second (default 200)")
    parser.add_argument("--broker", help="Kafka mode: the deployment's bootstrap "
                                         "(default $SCENETRIGGER_KAFKA)")
    parser.add_argument("--topic-prefix", help="Kafka mode: PREFIX.events/.triggers/.decisions/"
                                               ".audiences")
    parser.add_argument("--app-id",
                        help="Kafka mode: the workers' --app-id (user lookups read its state; "
                             "default: the --topic-prefix, else scenetrigger)")
    parser.add_argument("--config", help="the running config (default: the shipped scenes)")
    parser.add_argument("--catalog", help="embedded mode: product catalog file for content")
    parser.add_argument("--sample", help="recorded events the what-if replays (default: "
                                         "--events)")
    parser.add_argument("--redis-url", help="Kafka mode: Redis for erasure and the delivery "
                                            "dead-letter count; both modes: the ad spend "
                                            "`audiences import-spend` stored")
    parser.add_argument("--config-store",
                        help="config versions to list, push and roll back: 'kafka' (the "
                             "PREFIX.config topic) or a directory (default: none)")
    parser.add_argument("--records", type=positive, default=100_000,
                        help="events, triggers and decisions kept in memory (default 100000)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8095, help="listen port (default 8095)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.events) == bool(args.broker):
        raise SceneTriggerError("console: give --events FILE (embedded) or --broker (Kafka)")
    if args.rate <= 0:
        raise SceneTriggerError("console: --rate must be > 0")
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from config.loader import load_config
    from config.tokens import ADMIN_TOKENS_HINT, AdminTokens
    from scenetrigger.cli.config_follow import open_store
    from scenetrigger.console.app import Console, create_app
    from scenetrigger.console.sources import run_embedded, run_kafka
    from scenetrigger.console.state import ConsoleState, Limits
    from scenetrigger.serve.site import start_site

    config = load_config(args.config)
    state = ConsoleState(config, Limits(records=args.records))
    console = Console(state, config, args.config, dict(os.environ),
                      sample=args.sample or args.events,
                      versions=open_store(args.config_store, args.broker, args.topic_prefix))
    closers: list[Any] = []
    if console.versions is not None and hasattr(console.versions, "close"):
        closers.append(console.versions)
    if args.events:
        source = run_embedded(state, config, args.events, args.format, args.rate, args.catalog)
    else:
        from agents.topics import bootstrap_servers
        from scenetrigger.ops.explain_live import live_timeline

        bootstrap = bootstrap_servers(args.broker)
        source = run_kafka(state, config, bootstrap, args.topic_prefix, args.redis_url)
        app_id = args.app_id or args.topic_prefix or "scenetrigger"  # the worker's default

        async def lookup(user_id: str) -> Any:
            return await asyncio.to_thread(live_timeline, bootstrap, args.topic_prefix, config,
                                           user_id, 60, app_id, None, args.redis_url)

        console.lookup = lookup
        if args.redis_url:
            from channels.redis_client import redis_client
            from scenetrigger.ops.erasure import Eraser

            client = redis_client(args.redis_url, decode_responses=True)
            closers.append(client)
            console.eraser = Eraser(client, config).erase
    if args.redis_url and config.ads.sinks:  # the spend `audiences import-spend` stored
        from channels.redis_client import redis_client
        from strategies.ads_spend import RedisSpendStore

        spend_client = redis_client(args.redis_url)
        closers.append(spend_client)
        console.spend = RedisSpendStore(spend_client, config.delivery.redis_prefix).all
    runner, url = await start_site(create_app(console), args.host, args.port)
    admin = bool(AdminTokens.from_env(console.env))
    print(f"scenetrigger console ready on {url}/ ({state.source or 'starting'}); admin actions "
          f"{'on' if admin else 'off: ' + ADMIN_TOKENS_HINT}", file=sys.stderr, flush=True)
    task = asyncio.create_task(source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if task.done() and task.exception() is not None:
            raise SceneTriggerError(f"console source failed: {task.exception()!r}")
        if task.done():
            print(f"console: input finished ({state.totals['events']:,} events); serving "
                  "until stopped", file=sys.stderr, flush=True)
            await waiter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await runner.cleanup()
        for item in closers:
            await (item.aclose() if hasattr(item, "aclose") else item.close())
    print(f"console stopped: {state.totals['events']:,} events, "
          f"{len(state.decisions.records):,} decisions kept", file=sys.stderr)
    return 0
