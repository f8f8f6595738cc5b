"""``scenetrigger worker``: a Faust worker running the scenes on Kafka.

Start several with the same ``--app-id`` (and their own ``--state-dir``) and
they share the events partitions; a worker that stops hands its partitions
to the others, whose tables recover them from the changelog.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn

from agents.topics import DECISIONS_RETENTION_MS, DEFAULT_PARTITIONS, bootstrap_servers
from scenetrigger.cli import config_follow
from scenetrigger.cli.support import add_replication_argument, duration, positive
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("worker", help="run the scenes as a Faust worker on Kafka")
    parser.add_argument("--config", help="config file (default: the shipped scenes)")
    parser.add_argument("--broker", help="Kafka bootstrap host:port[,host:port] or kafka://... "
                                         "(default: $SCENETRIGGER_KAFKA, else 127.0.0.1:9092)")
    parser.add_argument("--app-id",
                        help="Faust app id = consumer group and changelog names; workers with "
                             "the same id share partitions (default: the --topic-prefix, "
                             "else scenetrigger)")
    parser.add_argument("--topic-prefix",
                        help="name topics PREFIX.events/.triggers/.dead-letters/.ticks "
                             "(default: the shared names in agents/topics.py)")
    parser.add_argument("--partitions", type=positive, default=DEFAULT_PARTITIONS,
                        help=f"partitions of the topics and table (default {DEFAULT_PARTITIONS})")
    parser.add_argument("--state-dir", default=".state",
                        help="where RocksDB tables live; one per worker (default .state)")
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    parser.add_argument("--clock", choices=("wall", "event"), default="wall",
                        help="wall: absence timers fire on the wall clock (live); event: "
                             "each partition's clock is its largest event ts (tests, backfills)")
    parser.add_argument("--decisions-retention", type=duration, default=DECISIONS_RETENTION_MS,
                        help="how long the decisions topic (PREFIX.decisions: each trigger "
                             "with its scene rule and each user-filter refusal, read by "
                             "`explain`) keeps records when this command creates it "
                             "(default 7d)")
    parser.add_argument("--sweep-interval", type=duration, default=500,
                        help="how often due timers are swept, e.g. 500ms (default 500ms)")
    parser.add_argument("--metrics-port", type=int,
                        help="serve Prometheus /metrics on this port (default: off)")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address /metrics listens on (default 127.0.0.1; 0.0.0.0 in a "
                             "container that Prometheus scrapes from another one)")
    parser.add_argument("--web-port", type=int, help="enable Faust's web views on this port")
    parser.add_argument("--session-timeout", type=duration, default=60_000,
                        help="how soon a dead worker's partitions move (default 60s, min 6s)")
    parser.add_argument("--commit-interval", type=duration, default=2_800,
                        help="offset commit interval (default 2800ms)")
    parser.add_argument("--settle-interval", type=duration, default=200,
                        help="a partition's batch of taken events is written (states, "
                             "changelog, acks) once its triggers are acknowledged and it is "
                             "this old (default 200ms)")
    parser.add_argument("--settle-events", type=positive, default=20_000,
                        help="... or once it holds this many events (default 20000)")
    parser.add_argument("--max-pending", type=positive, default=100_000,
                        help="at this many events in doubt (settled but not known durable, "
                             "plus the batch) the agent waits for the changelog and the "
                             "trigger acks; a worker killed -9 re-sends at most this many "
                             "events' triggers per partition (default 100000, "
                             "docs/guarantees.md)")
    profiles = parser.add_mutually_exclusive_group()
    profiles.add_argument("--live-profiles", action="store_true",
                          help="publish each changed user's profile on PREFIX.profiles (read "
                               "by `scenetrigger profiles` for on-site slots; docs/ads.md). "
                               "Default: when the starting config has `slots:` (it costs "
                               "about a fifth more CPU per event)")
    profiles.add_argument("--no-live-profiles", action="store_true",
                          help="do not publish them, even with `slots:` in the config")
    parser.add_argument("--standby-replicas", type=int, default=1,
                        help="standby table copies on other workers (default 1)")
    add_replication_argument(parser)
    parser.add_argument("--reload-interval", type=duration, default=None,
                        help="check --config-store (or --config) this often, e.g. 5s "
                             "(default 5s with --config-store, else off)")
    config_follow.add_arguments(parser, interval=False)
    parser.set_defaults(run=run)


def json_logging_config(level: str) -> dict[str, Any]:
    """Faust's Worker configures logging itself: keep the project's JSON lines."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "scenetrigger.cli.logs.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "level": level, "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["default"]},
    }


def run_faust_worker(app: Any, log_level: str) -> NoReturn:
    """Run a Faust app as this process's worker, logging JSON lines; never
    returns (SystemExit on stop)."""
    import faust

    from agents.heap import freeze_after_full_collections

    freeze_after_full_collections()  # a full collection of the state cache stopped the loop for 0.3 s
    worker = faust.Worker(app, loglevel=log_level, quiet=True, redirect_stdouts=False,
                          workdir=str(Path.cwd()), logging_config=json_logging_config(log_level))
    # Faust's terminal spinner sets the root logger to DEBUG: every debug call
    # in the send path then builds a record (a large share of a worker's CPU).
    worker.spinner = None
    worker.execute_from_commandline()


def faust_broker_url(broker: str | None) -> str:
    """``h:p,h2:p2`` (any accepted spelling) -> Faust's ``kafka://h:p;h2:p2``."""
    return "kafka://" + bootstrap_servers(broker).replace(",", ";")


def build_settings(args: argparse.Namespace) -> Any:
    from agents.settings import TopicNames, WorkerSettings, default_topics

    def store() -> Any:
        return config_follow.open_store(args.config_store, args.broker, args.topic_prefix)

    async def start() -> Any:  # the start config, read on a loop of its own
        reloader = await config_follow.initial_reloader(args.config, store(), None)
        close = getattr(reloader.store, "close", None)
        if close is not None:
            await close()
        return reloader

    first = asyncio.run(start())
    config = first.config
    return WorkerSettings(
        config=config,
        # Two prefixes on one cluster must not share a consumer group and changelog.
        app_id=args.app_id or args.topic_prefix or "scenetrigger",
        broker=faust_broker_url(args.broker),
        topics=TopicNames.with_prefix(args.topic_prefix) if args.topic_prefix else default_topics(),
        partitions=args.partitions,
        state_dir=Path(args.state_dir),
        store=args.store,
        clock=args.clock,
        sweep_interval_ms=args.sweep_interval,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        web_port=args.web_port,
        session_timeout_ms=args.session_timeout,
        commit_interval_ms=args.commit_interval,
        settle_ms=args.settle_interval,
        settle_batch=args.settle_events,
        max_pending=args.max_pending,
        standby_replicas=args.standby_replicas,
        reload_interval_ms=config_follow.interval_ms(args),
        config_path=Path(args.config) if args.config else None,
        config_store=store if args.config_store else None,
        config_digest=first.status.digest,
        experiment=first.experiment,
        live_profiles=not args.no_live_profiles and (args.live_profiles or bool(config.slots)),
    )


def run(args: argparse.Namespace) -> int:
    from agents.app import SceneWorker
    from agents.metrics import serve_metrics
    from agents.replication import ensure_worker_topics

    settings = build_settings(args)
    t = settings.topics
    # Create the topics (Faust's own too) with the right partition count and
    # replication before Faust subscribes: a broker that auto-creates would
    # use its own defaults.
    bootstrap = bootstrap_servers(args.broker)
    try:
        replication, found = asyncio.run(ensure_worker_topics(
            settings, bootstrap, args.decisions_retention, args.replication_factor))
    except SceneTriggerError:
        raise
    except Exception as exc:
        from aiokafka.errors import KafkaConnectionError

        if isinstance(exc, KafkaConnectionError):
            raise  # the CLI's one line for an unreachable Kafka, as every command says it
        raise SceneTriggerError(f"cannot reach Kafka at {bootstrap}: {exc!r}") from None
    for name in (t.events, t.ticks):
        if found.get(name) != settings.partitions:
            raise SceneTriggerError(
                f"topic {name} has {found.get(name)} partitions, the worker was started with "
                f"--partitions {settings.partitions}: events and ticks must be co-partitioned")
    settings = dataclasses.replace(settings, replication_factor=replication)
    scene_worker = SceneWorker(settings)
    if settings.metrics_port is not None:
        serve_metrics(scene_worker.metrics, settings.metrics_port, settings.metrics_host)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    print(f"scenetrigger worker: app {settings.app_id}, broker {bootstrap}, "
          f"{settings.partitions} partitions, replication {replication}, "
          f"clock {settings.clock}, store {settings.store}",
          file=sys.stderr, flush=True)
    run_faust_worker(scene_worker.app, args.log_level)
