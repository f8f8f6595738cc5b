"""``scenetrigger journeys``: run the config's strategies beside the scene
worker: triggers topic (+ feedback topic) in, messages on an actions topic,
positions in Redis (see :mod:`strategies.bridge`)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from scenetrigger.cli import config_follow
from scenetrigger.cli.support import add_replication_argument


def register(sub: Any) -> None:
    parser = sub.add_parser("journeys", help="run the strategies on the worker's triggers topic")
    parser.add_argument("--config", help="config file with a strategies: section")
    parser.add_argument("--broker", help="Kafka bootstrap (default: $SCENETRIGGER_KAFKA)")
    parser.add_argument("--topic-prefix", help="PREFIX.triggers / PREFIX.feedback / PREFIX.events "
                                               "/ PREFIX.journey-actions / PREFIX.audiences "
                                               "(default: shared names)")
    parser.add_argument("--group", default="scenetrigger-journeys", help="consumer group")
    parser.add_argument("--redis-url", help="default: $SCENETRIGGER_REDIS_URL")
    parser.add_argument("--redis-prefix", default="scenetrigger:")
    parser.add_argument("--metrics-port", type=int, help="serve /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address /metrics listens on (default 127.0.0.1)")
    parser.add_argument("--tick-interval", type=float, default=0.5, help="seconds")
    parser.add_argument("--admin-port", type=int,
                        help="serve GET /users/{id}/tags and /score on 127.0.0.1:PORT "
                             "(token: $SCENETRIGGER_ADMIN_TOKENS)")
    add_replication_argument(parser)
    config_follow.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    asyncio.run(_main(args))
    return 0


async def _main(args: argparse.Namespace) -> None:
    from prometheus_client import start_http_server

    from agents.kafka_clients import new_consumer, new_producer
    from agents.producer import ensure_topics
    from agents.topics import DECISIONS_RETENTION_MS, bootstrap_servers, topic_name
    from channels.feedback.decisions_kafka import KafkaDecisionLog
    from channels.redis_client import redis_client, redis_url_or_env
    from config.hash_keys import startup_check
    from config.reload import ReloadMetrics
    from scenetrigger.serve.site import SwappableSite
    from strategies.bridge import BridgeTopics, JourneyBridge, KafkaAudienceSender, KafkaSender
    from strategies.http import build_app
    from strategies.service import JourneyService
    from strategies.store import RedisTagStore

    startup_check("journeys")  # it reads erasure receipts (an erased user's triggers)
    reloader = await config_follow.initial_reloader(
        args.config, config_follow.open_store(args.config_store, args.broker, args.topic_prefix),
        None)
    config = reloader.config
    prefix = args.topic_prefix
    topics = BridgeTopics(
        triggers=topic_name(prefix, "triggers"),
        actions=topic_name(prefix, "journey-actions"),
        feedback=topic_name(prefix, "feedback"),
        events=topic_name(prefix, "events"),  # goals met by clickstream events
    )
    bootstrap = bootstrap_servers(args.broker)
    url = redis_url_or_env(args.redis_url)
    client = redis_client(url)
    producer = new_producer(bootstrap)
    consumer = new_consumer(bootstrap, *JourneyBridge.subscriptions_of(topics), group_id=args.group,
                            enable_auto_commit=False, auto_offset_reset="earliest")
    decisions = topic_name(prefix, "decisions")
    audiences = topic_name(prefix, "audiences")  # journeys' audience steps (compacted)
    # Every topic it reads or writes: one not there yet would be auto-created
    # with the broker's replication, or make the consumer wait for metadata.
    await ensure_topics(bootstrap, [decisions, topics.actions, audiences,
                                    *JourneyBridge.subscriptions_of(topics)],
                        configs={decisions: {"retention.ms": str(DECISIONS_RETENTION_MS)},
                                 audiences: {"cleanup.policy": "compact"}},
                        replication=args.replication_factor)
    await producer.start()
    await consumer.start()
    site = None
    try:
        tags = RedisTagStore(client, args.redis_prefix)
        service = JourneyService(config, client, tags, KafkaSender(producer, topics.actions),
                                 prefix=args.redis_prefix,
                                 decisions=KafkaDecisionLog(producer, decisions),
                                 audiences=KafkaAudienceSender(producer, audiences))
        reloader.attach(ReloadMetrics.on(service.metrics.registry))
        # may refuse: first; a config experiment's candidate strategies for its users
        service.reconfigure(config, reloader.experiment)
        reloader.subscribe(config_follow.refusing(
            lambda new: service.reconfigure(new, reloader.experiment)))
        if args.admin_port:
            admin = site = SwappableSite.listen("127.0.0.1", args.admin_port)
            await admin.serve(build_app(tags, config.strategies.scoring))
            # a new config's scoring for the admin routes, on the same socket
            reloader.subscribe(lambda new: admin.replace(build_app(tags, new.strategies.scoring)))
        if args.metrics_port:
            start_http_server(args.metrics_port, addr=args.metrics_host,
                              registry=service.metrics.registry)
        await service.start()
        async with config_follow.following(reloader, config_follow.interval_ms(args)):
            await JourneyBridge(service, consumer, topics, args.tick_interval).run()
    finally:
        if site is not None:
            await site.close()
        await consumer.stop()
        await producer.stop()
        await client.aclose()
