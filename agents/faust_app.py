"""The worker's :class:`faust.App`, configured from its settings."""

from __future__ import annotations

from typing import Any

import faust

from agents.settings import WorkerSettings

# More acked messages than a worker takes between two timer commits.
COMMIT_EVERY_NEVER = 1 << 62


def new_app(s: WorkerSettings) -> Any:
    """A fresh app: no module-level app, no autodiscovery, raw bytes."""
    session_s = s.session_timeout_ms / 1000
    return faust.App(
        s.app_id,
        broker=s.broker,
        store=s.store_url,
        datadir=str(s.state_dir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=s.partitions,
        processing_guarantee="at_least_once",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(session_s / 6, 0.5),
        broker_rebalance_timeout=session_s,
        broker_commit_interval=s.commit_interval_ms / 1000,
        # Commits on that timer only. Faust's fetcher also commits inline every
        # `broker_commit_every` acked messages (10,000), and a commit first
        # drains the producer (the settles' changelog writes): no message
        # reached the agent until it ended.
        broker_commit_every=COMMIT_EVERY_NEVER,
        producer_linger=s.producer_linger_ms / 1000,
        producer_max_batch_size=s.producer_max_batch_bytes,
        producer_max_request_size=max(s.producer_max_batch_bytes * 2, 1_000_000),
        table_standby_replicas=s.standby_replicas,
        topic_replication_factor=s.replication_factor,
        consumer_auto_offset_reset="earliest",
        # A rebalance or a stop waits until every taken message is acked;
        # batches are settled meanwhile (agents.faust_compat), so it never waits long.
        stream_wait_empty=True,
        web_enabled=s.web_port is not None,
        web_port=s.web_port or 6066,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
    )
