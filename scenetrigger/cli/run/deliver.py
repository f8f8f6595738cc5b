"""``scenetrigger deliver``: the delivery pipeline on Kafka. Reads the scene
worker's triggers topic and the journeys' actions topic in one consumer
group and sends each message through the configured channels, inside the
delivery policy (see :mod:`channels.kafka_delivery`). Each ``delivered`` /
``failed`` feedback event goes, keyed by user, to the events topic and, with
``--journeys-feedback``, to the journeys' feedback topic, acknowledged before
the offsets of its record are committed."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from agents.topics import DECISIONS_RETENTION_MS
from scenetrigger.cli import config_follow
from scenetrigger.cli.support import (
    add_replication_argument,
    duration,
    positive,
    run_stoppable,
)
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("deliver", help="deliver the worker's triggers and the journeys' "
                                            "messages through the channels (Kafka)")
    parser.add_argument("--config", help="config with channels:, content: and delivery:")
    parser.add_argument("--broker", help="Kafka bootstrap (default: $SCENETRIGGER_KAFKA)")
    parser.add_argument("--topic-prefix", help="read PREFIX.triggers and PREFIX.journey-actions "
                                               "(default: the shared names)")
    parser.add_argument("--group", default="scenetrigger-deliver",
                        help="consumer group (default scenetrigger-deliver)")
    parser.add_argument("--redis-url", help="policy, dedupe, message index, dead letters, "
                                            "catalog (default: $SCENETRIGGER_REDIS_URL)")
    parser.add_argument("--catalog", help="products file (CSV/JSONL) instead of the Redis catalog")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address /metrics listens on (default 127.0.0.1)")
    parser.add_argument("--release-interval", type=duration, default=1_000,
                        help="how often due quiet-hours deferrals are released (default 1s)")
    parser.add_argument("--journeys-feedback", action="store_true",
                        help="also publish delivered/failed feedback to the journeys' "
                             "feedback topic (PREFIX.feedback, read by `scenetrigger journeys`)")
    parser.add_argument("--decisions-retention", type=duration, default=DECISIONS_RETENTION_MS,
                        help="how long the decisions topic (PREFIX.decisions: every outcome "
                             "with its deciding rule, read by `explain`) keeps records when "
                             "this command creates it (default 7d)")
    parser.add_argument("--profiles", type=positive, default=100_000,
                        help="latest profiles kept for releases and journey sends "
                             "(default 100000 users)")
    add_replication_argument(parser)
    config_follow.add_arguments(parser)
    parser.set_defaults(run=run)


async def persistence_warning(client: Any) -> str | None:
    """Why this Redis may lose dead letters, leases and deferrals on a restart
    (None: it keeps an append-only file, or it will not say)."""
    from redis.exceptions import ResponseError

    from channels.redis_client import is_cluster

    try:  # on a cluster: every master's answer, by node
        info = await client.info("persistence",
                                 **({"target_nodes": "primaries"} if is_cluster(client) else {}))
    except ResponseError:  # e.g. INFO disabled on a managed Redis: nothing to say
        return None  # (a Redis that cannot be reached is raised: deliver cannot work)
    # A cluster answers node by node: every master must keep its file.
    nodes = [v for v in info.values() if isinstance(v, dict)] or [info]
    if all(str(node.get("aof_enabled", "1")) == "1" for node in nodes):
        return None
    return ("Redis has no append-only file (appendonly no): a restart erases the "
            "dead-letter stream, dedupe leases and deferred messages (docs/guarantees.md)")


def run(args: argparse.Namespace) -> int:
    return run_stoppable(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from agents.kafka_clients import new_consumer, new_producer
    from agents.producer import ensure_topics
    from agents.topics import bootstrap_servers, feedback_topics, topic_name
    from channels.arms import open_armed
    from channels.assembly import file_catalog, open_delivery
    from channels.feedback.decisions_kafka import Flushes, KafkaDecisionLog
    from channels.feedback.kafka_sink import KafkaFeedbackSink
    from channels.kafka_delivery import DeliveryConsumer, DeliveryTopics
    from channels.redis_client import redis_client, redis_url_or_env
    from config.hash_keys import startup_check
    from config.reload import ReloadMetrics

    startup_check("deliver")  # it reads do-not-contact entries under the same key
    reloader = await config_follow.initial_reloader(
        args.config, config_follow.open_store(args.config_store, args.broker, args.topic_prefix),
        None)
    config = reloader.config
    topics = DeliveryTopics(topic_name(args.topic_prefix, "triggers"),
                            topic_name(args.topic_prefix, "journey-actions"))
    out_topics = feedback_topics(args.topic_prefix, args.journeys_feedback)
    decisions_topic = topic_name(args.topic_prefix, "decisions")
    bootstrap = bootstrap_servers(args.broker)
    registry = CollectorRegistry()
    feedback = KafkaFeedbackSink(None, out_topics, wait=False, registry=registry)
    catalog = file_catalog(args.catalog)
    # One Redis client for the process: a new config's pipeline shares it (the
    # consumer's dead letters stay on it), each pipeline owns its channels.
    client = redis_client(redis_url_or_env(args.redis_url), decode_responses=True)

    def open_for(new_config: Any) -> Any:
        return open_delivery(new_config, "live", metrics=registry, catalog=catalog,
                             feedback=feedback, redis_url=args.redis_url, redis=client,
                             who="scenetrigger deliver")

    # During a config experiment the candidate's pipeline runs beside the
    # base's, each user decided by the one of their arm (channels/arms.py).
    live = open_armed(open_for, config, reloader.experiment)
    retired: list[Any] = []
    consumer = producer = None
    try:
        try:  # subscribing to a topic not there yet would wait for a metadata refresh
            await ensure_topics(
                bootstrap, [topics.triggers, topics.actions, *out_topics, decisions_topic],
                configs={decisions_topic: {"retention.ms": str(args.decisions_retention)}},
                replication=args.replication_factor)
        except Exception as exc:
            raise SceneTriggerError(f"cannot reach Kafka at {bootstrap}: {exc!r}") from None
        producer = new_producer(bootstrap)
        await producer.start()
        feedback.producer = producer
        decisions = live.pipeline.decisions = KafkaDecisionLog(producer, decisions_topic)
        consumer = new_consumer(bootstrap, topics.triggers, topics.actions, group_id=args.group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        delivery = DeliveryConsumer(live.pipeline, consumer, topics, registry=registry,
                                    dead_letter=live.dead_letter,
                                    release_interval_ms=args.release_interval,
                                    profiles=args.profiles,
                                    feedback=Flushes(feedback, decisions))
        reloader.attach(ReloadMetrics.on(registry))

        def swap_pipeline(new_config: Any) -> None:
            """A new config: a new pipeline (content, policy, channels) for the
            next records; the old channels close once in-flight sends are done."""
            nonlocal live
            # a refusal (missing secret) leaves all as it is
            fresh = open_armed(open_for, new_config, reloader.experiment)
            fresh.pipeline.decisions = decisions
            delivery.pipeline = fresh.pipeline
            retired.append(live)
            _close_later(live)
            live = fresh

        reloader.subscribe(config_follow.refusing(swap_pipeline))
        if args.metrics_port:
            start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
        loop = asyncio.get_running_loop()

        def stop(name: str) -> None:
            # Said at once: a shutdown that hangs shows where it started.
            print(f"scenetrigger deliver: {name}: stopping after the records in hand",
                  file=sys.stderr, flush=True)
            delivery.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig.name)
        print(f"scenetrigger deliver: group {args.group}, broker {bootstrap}, topics "
              f"{topics.triggers} + {topics.actions}, feedback to {' + '.join(out_topics)}, "
              f"channels "
              f"{', '.join(sorted(live.pipeline.channels))}", file=sys.stderr, flush=True)
        warning = await persistence_warning(client)
        if warning:
            print(f"scenetrigger deliver: WARNING {warning}", file=sys.stderr, flush=True)
        try:
            async with config_follow.following(reloader, config_follow.interval_ms(args)):
                await delivery.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        print(live.pipeline.render_summary(), file=sys.stderr, flush=True)
        return 0
    finally:
        if consumer is not None:
            await consumer.stop()
        if producer is not None:  # sends what is still buffered
            await producer.stop()
        for old in retired:  # closing twice is harmless: the stack is empty then
            await old.aclose()
        await live.aclose()
        await client.aclose()


_CLOSING: set[asyncio.Task[None]] = set()


def _close_later(old: Any, after_s: float = 30.0) -> None:
    """Close a replaced pipeline's channels once sends in flight on it are done."""
    async def later() -> None:
        await asyncio.sleep(after_s)
        await old.aclose()

    task = asyncio.get_running_loop().create_task(later())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)
