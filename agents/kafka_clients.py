"""Every Kafka client of the project, built here with the shared settings.

The producers, consumers, admin clients and the raw metadata client of every
command, of the export, the console and the benchmark come from these
functions (Faust builds the worker's own, see :mod:`agents.faust_compat`), so
a setting every client needs is set once:

* the bootstrap addresses, as :func:`agents.topics.bootstrap_servers`
  normalises them (``kafka://h:p;h2:p2`` works too);
* the client id (``scenetrigger``), which names the project's connections in
  the broker's logs and quotas;
* for producers, what :func:`agents.replication.producer_options` decides
  (acks=all, idempotent), then the throughput defaults;
* for the clients started here, the short probe of
  :mod:`agents.kafka_probe` first: a wrong service fails in seconds, not
  aiokafka's 40 s.

``tests/test_layers.py`` fails on an aiokafka client built anywhere else.
"""

from __future__ import annotations

from typing import Any

from agents.topics import bootstrap_servers

CLIENT_ID = "scenetrigger"
# Throughput defaults of every producer (a caller's options win).
PRODUCER_DEFAULTS: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 256 * 1024}


def _shared(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap_servers(bootstrap), "client_id": CLIENT_ID}


def new_producer(bootstrap: str, **options: Any) -> Any:
    """An aiokafka producer (not started): acks=all and idempotent, so a
    flushed record is stored once; ``options`` override (the benchmark's
    ``acks=1`` also passes ``enable_idempotence=False``)."""
    from aiokafka import AIOKafkaProducer

    from agents.replication import producer_options

    return AIOKafkaProducer(**{**_shared(bootstrap), **producer_options(),
                               **PRODUCER_DEFAULTS, **options})


def new_consumer(bootstrap: str, *topics: str, **options: Any) -> Any:
    """An aiokafka consumer (not started) of ``topics`` (none: assign later)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **{**_shared(bootstrap), **options})


def new_reader(bootstrap: str, **options: Any) -> Any:
    """A consumer without a group that reads from the beginning and commits
    nothing (other readers are not disturbed): for reading a topic back."""
    return new_consumer(bootstrap, **{"enable_auto_commit": False,
                                      "auto_offset_reset": "earliest", **options})


async def started_reader(bootstrap: str, **options: Any) -> Any:
    """:func:`new_reader`, started after the probe."""
    from agents.kafka_probe import probe_kafka

    await probe_kafka(bootstrap_servers(bootstrap))
    consumer = new_reader(bootstrap, **options)
    await consumer.start()
    return consumer


def new_admin(bootstrap: str, **options: Any) -> Any:
    """An aiokafka admin client (not started)."""
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**{**_shared(bootstrap), **options})


async def open_client(bootstrap: str) -> Any:
    """A started aiokafka client (the metadata of every broker), after the
    probe."""
    from aiokafka.client import AIOKafkaClient

    from agents.kafka_probe import probe_kafka

    await probe_kafka(bootstrap_servers(bootstrap))
    client = AIOKafkaClient(**_shared(bootstrap))
    await client.bootstrap()
    return client
