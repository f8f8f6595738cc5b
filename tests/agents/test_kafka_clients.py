"""One Kafka client factory (agents/kafka_clients.py) and aiokafka internals
only in agents/faust_compat.py: the tree is read, and the factory's settings
are checked on a recording stand-in for the aiokafka classes."""

from __future__ import annotations

import ast
import asyncio
from typing import Any

import pytest

from agents import kafka_clients
from tests.paths import REPO_ROOT

# The product and the benchmark; tests and scripts/kafka (broker set-up, run
# without the package) are the outside world and build their own clients.
SCANNED = ("triggers", "config", "channels", "strategies", "agents", "scenetrigger", "bench")
CLIENT_CLASSES = frozenset({"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient",
                            "AIOKafkaClient", "KafkaAdminClient", "KafkaProducer",
                            "KafkaConsumer"})
FACTORY = "agents/kafka_clients.py"
COMPAT = "agents/faust_compat.py"
# Private attributes of aiokafka's consumer, producer and clients.
AIOKAFKA_PRIVATE = frozenset({"_client", "_coordinator", "_fetcher", "_sender", "_subscription",
                              "_accumulator", "_txn_manager", "_metadata", "_conns",
                              "_api_version", "_closed", "_bootstrap_servers", "_client_id"})


def client_classes_named(source: str) -> list[tuple[int, str]]:
    """(line, name) of every aiokafka client class named (imported, called or
    read as an attribute) in ``source``; docstrings and comments do not count."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in CLIENT_CLASSES:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and node.attr in CLIENT_CLASSES:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            found.extend((node.lineno, a.name) for a in node.names if a.name in CLIENT_CLASSES)
    return sorted(set(found))


def private_attributes(source: str) -> list[tuple[int, str]]:
    """(line, attribute) where ``source`` reads an aiokafka private attribute of
    an object other than its own ``self``/``cls`` (``self._consumer._client``
    counts, ``self._client`` does not)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in AIOKAFKA_PRIVATE and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append((node.lineno, node.attr))
    return sorted(set(found))


def _modules() -> list[tuple[str, str]]:
    return [(p.relative_to(REPO_ROOT).as_posix(), p.read_text(encoding="utf-8"))
            for package in SCANNED for p in sorted((REPO_ROOT / package).rglob("*.py"))]


def test_every_kafka_client_comes_from_the_factory() -> None:
    modules = _modules()
    assert len(modules) > 100
    problems = [f"{name}:{line}: {cls}" for name, source in modules if name != FACTORY
                for line, cls in client_classes_named(source)]
    assert problems == [], ("build Kafka clients with agents/kafka_clients.py:\n"
                            + "\n".join(problems))
    assert {cls for _, cls in client_classes_named(
        (REPO_ROOT / FACTORY).read_text(encoding="utf-8"))} >= {
        "AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}


def test_no_aiokafka_private_attribute_outside_faust_compat() -> None:
    # Only modules that hold aiokafka objects: a Redis wrapper's ``_client`` is its own.
    problems = [f"{name}:{line}: {attr}" for name, source in _modules() if name != COMPAT
                and ("aiokafka" in source or "kafka_clients" in source)
                for line, attr in private_attributes(source)]
    assert problems == [], ("put aiokafka internals behind a function of "
                            "agents/faust_compat.py:\n" + "\n".join(problems))
    assert private_attributes((REPO_ROOT / COMPAT).read_text(encoding="utf-8"))


def test_the_checks_see_a_bad_line() -> None:
    source = ("from aiokafka import AIOKafkaConsumer\n"
              "import aiokafka\n"
              "c = AIOKafkaConsumer(bootstrap_servers='b')\n"
              "p = aiokafka.AIOKafkaProducer()\n"
              "'''AIOKafkaAdminClient in a docstring'''\n"
              "await c._client.force_metadata_update()\n"
              "await self._consumer._fetcher.x()\n"
              "self._client = None\n")
    assert client_classes_named(source) == [(1, "AIOKafkaConsumer"), (3, "AIOKafkaConsumer"),
                                            (4, "AIOKafkaProducer")]
    assert private_attributes(source) == [(6, "_client"), (7, "_fetcher")]


class Recorder:
    """Stands in for an aiokafka class: records what it was built with."""

    def __init__(self, *topics: str, **settings: Any) -> None:
        self.topics = topics
        self.settings = settings


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiokafka
    import aiokafka.admin

    for module, name in ((aiokafka, "AIOKafkaProducer"), (aiokafka, "AIOKafkaConsumer"),
                         (aiokafka.admin, "AIOKafkaAdminClient")):
        monkeypatch.setattr(module, name, Recorder)


@pytest.mark.usefixtures("recorded")
def test_the_factory_applies_the_shared_settings() -> None:
    broker = "kafka://127.0.0.1:9001;127.0.0.1:9002/"
    shared = {"bootstrap_servers": "127.0.0.1:9001,127.0.0.1:9002", "client_id": "scenetrigger"}
    producer = kafka_clients.new_producer(broker)
    assert producer.settings == {**shared, "acks": "all", "enable_idempotence": True,
                                 "linger_ms": 5, "max_batch_size": 256 * 1024}
    fast = kafka_clients.new_producer(broker, acks=1, enable_idempotence=False)
    assert (fast.settings["acks"], fast.settings["enable_idempotence"]) == (1, False)
    consumer = kafka_clients.new_consumer(broker, "t1", "t2", group_id="g")
    assert (consumer.topics, consumer.settings) == (("t1", "t2"), {**shared, "group_id": "g"})
    reader = kafka_clients.new_reader(broker)
    assert reader.settings == {**shared, "enable_auto_commit": False,
                               "auto_offset_reset": "earliest"}
    assert kafka_clients.new_admin(broker).settings == shared


def test_refresh_metadata_asks_the_consumers_client() -> None:
    from agents.faust_compat import refresh_metadata

    class Client:
        updates = 0

        async def force_metadata_update(self) -> bool:
            self.updates += 1
            return True

    class Consumer:
        _client = Client()

    consumer = Consumer()
    asyncio.run(refresh_metadata(consumer))
    assert consumer._client.updates == 1
