"""Lint of deploy/kafka-cluster.yml (no Docker engine here): three nodes that
name each other consistently, replicated internal topics, nothing published
beyond loopback, and the bootstrap list docs/deploy.md gives reaches every
node."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from agents.replication import default_replication, min_insync
from agents.topics import bootstrap_servers

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "kafka-cluster.yml"
NODES = ("kafka-1", "kafka-2", "kafka-3")


def _services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merges the anchors
    services: dict[str, Any] = data["services"]
    return services


def _env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in _services()[name]["environment"].items()}


def test_three_nodes_each_a_broker_and_a_controller_voter() -> None:
    assert set(_services()) == set(NODES)
    ids = {name: _env(name)["KAFKA_NODE_ID"] for name in NODES}
    assert sorted(ids.values()) == ["1", "2", "3"]
    voters = ",".join(f"{ids[n]}@{n}:9093" for n in sorted(NODES, key=ids.__getitem__))
    for name in NODES:
        env = _env(name)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        # Each node advertises itself (a copied block that names another node
        # would send its clients to the wrong broker).
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert _services()[name]["volumes"] == [f"{name}-data:/var/lib/kafka/data"]
        assert "healthcheck" in _services()[name]


def test_internal_topics_replicated_as_the_project_replicates() -> None:
    factor = default_replication(len(NODES))
    for name in NODES:
        env = _env(name)
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        for key in ("KAFKA_DEFAULT_REPLICATION_FACTOR", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"):
            assert env[key] == str(factor), key
        for key in ("KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"):
            assert env[key] == str(min_insync(factor)), key


def test_host_listeners_on_loopback_as_docs_say() -> None:
    published = []
    for name in NODES:
        ports = _services()[name]["ports"]
        assert len(ports) == 1 and ports[0].startswith("127.0.0.1:")
        host_port = ports[0].split(":")[1]
        assert f"EXTERNAL://127.0.0.1:{host_port}" in _env(name)["KAFKA_ADVERTISED_LISTENERS"]
        published.append(f"127.0.0.1:{host_port}")
    for doc in (COMPOSE.read_text(), (REPO / "docs" / "deploy.md").read_text()):
        lists = re.findall(r"--broker (\S+)", doc)
        assert lists, "no --broker example"
        assert {tuple(bootstrap_servers(b).split(",")) for b in lists
                if "127.0.0.1" in b} == {tuple(published)}
