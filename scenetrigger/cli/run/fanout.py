"""``scenetrigger fanout``: the catalog scenes' catalog side on Kafka
(agents/fanout_app.py; docs/catalog.md). Run it beside ``scenetrigger
worker`` with the same ``--topic-prefix`` and config: it keeps who is
interested in which product and sends each change to those users' partitions."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

from agents.topics import DEFAULT_PARTITIONS, bootstrap_servers
from scenetrigger.cli.support import add_replication_argument, duration, positive
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("fanout", help="run the catalog scenes' fan-out (product side) "
                                           "as a Faust app on Kafka")
    parser.add_argument("--config", help="config file with catalog scenes (back_in_stock, "
                                         "price_drop, new_arrival) and catalog_interest")
    parser.add_argument("--broker", help="Kafka bootstrap host:port[,host:port] (default: "
                                         "$SCENETRIGGER_KAFKA, else 127.0.0.1:9092)")
    parser.add_argument("--topic-prefix", help="read PREFIX.events and PREFIX.catalog, keep "
                                               "PREFIX.by-product, write PREFIX.events")
    parser.add_argument("--app-id", help="consumer group and changelog names "
                                         "(default PREFIX-fanout, else scenetrigger-fanout)")
    parser.add_argument("--partitions", type=positive, default=DEFAULT_PARTITIONS,
                        help=f"partitions of the by-product topic and table (default "
                             f"{DEFAULT_PARTITIONS})")
    parser.add_argument("--state-dir", default=".state-fanout", help="where the table lives")
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics here")
    parser.add_argument("--session-timeout", type=duration, default=60_000,
                        help="how soon a dead process's partitions move (default 60s)")
    parser.add_argument("--commit-interval", type=duration, default=2_800,
                        help="offset commit interval (default 2800ms)")
    parser.add_argument("--batch-events", type=positive, default=500,
                        help="fan-out events per record, per user partition (default 500)")
    add_replication_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from agents.catalog_stream import CatalogTopics, ensure_catalog_topics
    from agents.config_store import COMPACTED
    from agents.fanout_app import TABLE, FanoutTopics, FanoutWorker, by_product_topic
    from agents.producer import ensure_topics
    from agents.replication import changelog_topic, cluster_replication, leader_topic
    from agents.settings import TopicNames, WorkerSettings, default_topics
    from config.loader import load_config
    from scenetrigger.cli.run.worker import faust_broker_url, run_faust_worker

    config = load_config(args.config)
    if not any(s.kind in ("back_in_stock", "price_drop", "new_arrival")
               for s in config.scene_list()):
        raise SceneTriggerError("the config has no catalog scene (back_in_stock, price_drop "
                                "or new_arrival): there is nothing to fan out")
    prefix = args.topic_prefix
    names = TopicNames.with_prefix(prefix) if prefix else default_topics()
    catalog = CatalogTopics.of(prefix)
    topics = FanoutTopics(names.events, catalog.catalog, by_product_topic(prefix),
                          names.dead_letters)
    bootstrap = bootstrap_servers(args.broker)

    app_id = args.app_id or f"{prefix or 'scenetrigger'}-fanout"

    async def create() -> tuple[int, int]:
        """Every topic, Faust's own too, before Faust starts: a table whose
        changelog Faust had not created yet crashed its agent (0 partitions)."""
        factor = await cluster_replication(bootstrap, args.replication_factor)
        await ensure_catalog_topics(bootstrap, catalog, replication=factor)
        found = await ensure_topics(bootstrap, [topics.events, topics.by_product],
                                    args.partitions, replication=factor)
        changelog = changelog_topic(app_id, TABLE)
        await ensure_topics(bootstrap, [changelog], args.partitions,
                            configs={changelog: COMPACTED}, replication=factor)
        await ensure_topics(bootstrap, [leader_topic(app_id)], 1, replication=factor)
        return factor, found[topics.events]

    factor, event_partitions = asyncio.run(create())
    topics = dataclasses.replace(topics, event_partitions=event_partitions,
                                 batch=args.batch_events)
    settings = WorkerSettings(
        config=config, app_id=app_id,
        broker=faust_broker_url(args.broker), topics=names, partitions=args.partitions,
        state_dir=Path(args.state_dir), store=args.store,
        session_timeout_ms=args.session_timeout, commit_interval_ms=args.commit_interval,
        replication_factor=factor)
    fanout = FanoutWorker(settings, topics)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=fanout.metrics.registry)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    print(f"scenetrigger fanout: app {settings.app_id}, broker {bootstrap}, "
          f"{topics.events} + {topics.catalog} -> {topics.by_product} -> {topics.events}",
          file=sys.stderr, flush=True)
    run_faust_worker(fanout.app, args.log_level)

