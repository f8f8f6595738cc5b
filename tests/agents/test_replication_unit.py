"""The replication policy (agents.replication) without a broker: the factor
from the cluster's broker count, min.insync one less, producers idempotent,
and every topic-creating command takes --replication-factor."""

from __future__ import annotations

from typing import Any

import pytest

from agents.replication import (
    ReplicationError,
    changelog_topic,
    default_replication,
    leader_topic,
    min_insync,
    producer_options,
    replication_for,
    topic_configs,
    warn_under_replicated,
)
from scenetrigger.cli.main import build_parser


@pytest.mark.parametrize(("brokers", "factor", "insync"),
                         [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2), (12, 3, 2)])
def test_default_is_min_of_three_and_brokers(brokers: int, factor: int, insync: int) -> None:
    assert default_replication(brokers) == factor == replication_for(None, brokers)
    assert min_insync(factor) == insync
    assert topic_configs(factor) == {"min.insync.replicas": str(insync)}


def test_a_given_factor_is_kept_within_the_cluster() -> None:
    assert replication_for(2, 3) == 2
    assert replication_for(5, 5) == 5
    assert topic_configs(5) == {"min.insync.replicas": "4"}
    with pytest.raises(ReplicationError, match="needs 4 brokers, the cluster has 3"):
        replication_for(4, 3)
    with pytest.raises(ReplicationError, match=">= 1"):
        replication_for(0, 3)


def test_a_topic_config_may_say_otherwise() -> None:
    assert topic_configs(3, {"retention.ms": "1000"}) == {"min.insync.replicas": "2",
                                                          "retention.ms": "1000"}
    assert topic_configs(3, {"min.insync.replicas": "3"}) == {"min.insync.replicas": "3"}


def test_producers_wait_for_every_replica_and_are_idempotent() -> None:
    assert producer_options() == {"acks": "all", "enable_idempotence": True}


def test_faust_topic_names() -> None:
    # faust-streaming 0.15's own spelling (Table._changelog_topic_name,
    # LeaderAssignor._leader_topic_name): the worker creates these before Faust.
    import faust

    app = faust.App("t-names", broker="kafka://127.0.0.1:1", autodiscover=False)
    table = app.Table("user-state", default=None, partitions=4)
    assert changelog_topic("t-names", "user-state") == table.changelog_topic.get_topic_name()
    assigner: Any = app._leader_assignor
    assert leader_topic("t-names") == assigner._leader_topic_name


def test_under_replicated_topics_are_named(caplog: pytest.LogCaptureFixture) -> None:
    one = [{"partition": 0, "leader": 1, "replicas": [1], "isr": [1]}]
    three = [{"partition": 0, "leader": 1, "replicas": [1, 2, 3], "isr": [1, 2, 3]}]
    warn_under_replicated({"old.events": one, "new.events": three}, 3)
    assert [r.getMessage() for r in caplog.records] == [
        "topic old.events has 1 replica(s), scenetrigger creates topics with 3: reassign its "
        "partitions (kafka-reassign-partitions) to replicate it"]


@pytest.mark.parametrize("argv", [
    ["produce", "x.jsonl"], ["collector"], ["worker"], ["deliver"], ["journeys"], ["serve"],
    ["config", "push", "x.yaml", "-m", "why"]])
def test_every_topic_creating_command_takes_the_flag(argv: list[str]) -> None:
    parser = build_parser(argv)
    assert parser.parse_args(argv).replication_factor is None  # None: decided from the cluster
    given = parser.parse_args([*argv, "--replication-factor", "2"])
    assert given.replication_factor == 2
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--replication-factor", "0"])


def test_the_workers_faust_producer_is_idempotent() -> None:
    import faust

    from agents.faust_compat import idempotent_producers

    idempotent_producers()
    idempotent_producers()  # twice: still one patch
    app = faust.App("t-idem", broker="kafka://127.0.0.1:1", autodiscover=False)
    producer: Any = app.producer
    assert producer._settings_extra() == {"enable_idempotence": True}
    assert producer.acks == -1  # Faust's default: all in-sync replicas
