"""How the topics scenetrigger creates are replicated, decided once for every
command (``produce``, ``collector``, ``worker``, ``deliver``, ``journeys``,
``serve``, ``config push``) and for Faust's own topics; never left to the
broker's ``default.replication.factor``.

* Replication factor: ``--replication-factor`` when given, else
  min(3, brokers in the cluster) read from the cluster's metadata.
* ``min.insync.replicas`` = replication factor - 1 (at least 1) on every topic
  the project creates: with 3 replicas an acknowledged write is on two
  nodes, and one node may be down without stopping writes.
* Producers: ``acks=all`` with idempotence (:func:`producer_options`).

A new topic counts as created once *every* broker's metadata shows all its
partitions with a leader (:func:`wait_visible`): on a fresh multi-node
cluster a broker may still answer with no partitions for a topic another
one has created, and Faust then refuses a changelog of "0 partitions".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agents.errors import AgentError
from agents.kafka_clients import open_client

if TYPE_CHECKING:
    from agents.settings import WorkerSettings

log = logging.getLogger(__name__)

MAX_REPLICATION = 3
MIN_INSYNC = "min.insync.replicas"


class ReplicationError(AgentError):
    """A replication factor the cluster cannot hold, or topics that do not appear."""


def default_replication(brokers: int) -> int:
    return max(1, min(MAX_REPLICATION, brokers))


def min_insync(replication: int) -> int:
    return max(1, replication - 1)


def replication_for(requested: int | None, brokers: int) -> int:
    """``requested`` (checked against the cluster), else the default for ``brokers``."""
    if requested is None:
        return default_replication(brokers)
    if requested < 1:
        raise ReplicationError("the replication factor must be >= 1")
    if requested > brokers:
        raise ReplicationError(f"replication factor {requested} needs {requested} brokers, "
                               f"the cluster has {brokers}")
    return requested


def topic_configs(replication: int, configs: Mapping[str, str] | None = None) -> dict[str, str]:
    """A new topic's config: ``min.insync.replicas`` for ``replication``, then ``configs``
    (which may say otherwise for one topic)."""
    return {MIN_INSYNC: str(min_insync(replication)), **(configs or {})}


def producer_options() -> dict[str, Any]:
    """What every producer of the project sets: a send is acknowledged once
    every in-sync replica has it, and a retried send is stored once."""
    return {"acks": "all", "enable_idempotence": True}


# Faust's own topics (faust-streaming 0.15: Table._changelog_topic_name and
# LeaderAssignor._leader_topic_name), created by the worker before Faust
# starts so they get the project's replication and are in every broker's
# metadata when Faust checks them.
def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def leader_topic(app_id: str) -> str:
    return f"{app_id}-__assignor-__leader"


def broker_ids(client: Any) -> list[int]:
    return sorted(b.nodeId for b in client.cluster.brokers())


async def describe_on(client: Any, node: int, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The partitions (leader, replicas, isr) of ``names`` as broker ``node``
    sees them; a topic it does not know is absent (never auto-created)."""
    from aiokafka.protocol.metadata import MetadataRequest

    response = await client.send(node, MetadataRequest(names, False))
    return {t["topic"]: t["partitions"] for t in response.to_object()["topics"]
            if t["error_code"] == 0}


async def existing_topics(client: Any, names: list[str]) -> set[str]:
    """Which of ``names`` exist, asked of the first broker that answers (the
    admin client asks a random one, which may be a dead node)."""
    last: Exception | None = None
    for node in broker_ids(client):
        try:
            return set(await describe_on(client, node, names))
        except Exception as exc:
            last = exc
    raise ReplicationError(f"no broker answered a metadata request: {last!r}")


def _ready(partitions: list[dict[str, Any]]) -> bool:
    return bool(partitions) and all(p["leader"] >= 0 for p in partitions)


async def wait_visible(client: Any, names: Iterable[str], timeout_s: float = 30.0,
                       ) -> dict[str, list[dict[str, Any]]]:
    """Until every broker that answers shows every topic of ``names`` with
    all its partitions led; returns the partitions as the last broker saw
    them. A broker that does not answer (down, not yet fenced) is skipped: a
    process started while a node is down must still start."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    missing: set[str] = set(wanted)
    while True:
        seen: dict[str, list[dict[str, Any]]] = {}
        missing = set()
        for node in broker_ids(client):
            try:
                found = await describe_on(client, node, wanted)
            except Exception as exc:
                log.debug("metadata of broker %s: %r", node, exc)
                continue
            missing |= {n for n in wanted if not _ready(found.get(n, []))}
            seen.update(found)
        if not seen and not missing:
            missing = {"(no broker answered)"}
        if not missing:
            return seen
        if asyncio.get_running_loop().time() > deadline:
            raise ReplicationError("topics not available on every broker: "
                                   + ", ".join(sorted(missing)))
        await asyncio.sleep(0.2)
        await client.force_metadata_update()  # brokers fenced or back meanwhile


def warn_under_replicated(described: Mapping[str, list[dict[str, Any]]],
                          replication: int) -> None:
    """Existing topics with fewer replicas than the project would give them
    are left as they are (Kafka cannot change that in place): say so."""
    for name, partitions in sorted(described.items()):
        have = min(len(p["replicas"]) for p in partitions)
        if have < replication:
            log.warning("topic %s has %d replica(s), scenetrigger creates topics with %d: "
                        "reassign its partitions (kafka-reassign-partitions) to replicate it",
                        name, have, replication)


async def cluster_replication(bootstrap: str, requested: int | None) -> int:
    """The replication factor for this cluster (see :func:`replication_for`)."""
    client = await open_client(bootstrap)
    try:
        return replication_for(requested, len(broker_ids(client)))
    finally:
        await client.close()


async def ensure_worker_topics(settings: WorkerSettings, bootstrap: str,
                               decisions_retention_ms: int, requested: int | None,
                               ) -> tuple[int, dict[str, int]]:
    """The worker's topics created and shown by every broker before Faust
    starts: its data topics, then (when events and ticks have the worker's
    partition count, which the caller checks) the table's changelog and
    Faust's leader topic. Returns the replication factor and each data
    topic's partition count."""
    from agents.producer import ensure_topics

    factor = await cluster_replication(bootstrap, requested)
    t = settings.topics
    found = await ensure_topics(
        bootstrap, [t.events, t.ticks, t.triggers, t.dead_letters, t.decisions, t.audiences,
                    t.profiles],
        settings.partitions, configs={t.decisions: {"retention.ms": str(decisions_retention_ms)},
                                      t.audiences: {"cleanup.policy": "compact"},
                                      t.profiles: {"cleanup.policy": "compact"}},
        replication=factor)
    if all(found.get(n) == settings.partitions for n in (t.events, t.ticks)):
        changelog = changelog_topic(settings.app_id, settings.table_name)
        await ensure_topics(bootstrap, [changelog], settings.partitions,
                            configs={changelog: {"cleanup.policy": "compact"}},
                            replication=factor)
        await ensure_topics(bootstrap, [leader_topic(settings.app_id)], 1, replication=factor)
    return factor, found
