"""Audiences on real Kafka: a worker with ``--clock event`` on one partition
(one clock, as replay's) writes to the compacted ``PREFIX.audiences`` topic
exactly the audience lines replay prints for the rees46 sample, keyed
``audience|user_id`` (triggers/audiences/record.py, docs/ads.md)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.agents.worker_support import committed_offsets, start_worker, unique, wait_for
from tests.paths import REES46_SAMPLE
from tests.triggers.test_audiences_reference import AUDIENCES, SCENES

REPO = Path(__file__).resolve().parents[2]
EVENTS_IN_SAMPLE = 8721


def _cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr


async def _read(bootstrap: str, topic: str) -> tuple[list[Any], str]:
    from agents.export import read_topic
    from tests.scenetrigger.test_catalog_live import topic_config

    records = await read_topic(bootstrap, topic, 30)
    return records, (await topic_config(bootstrap, topic))["cleanup.policy"]


def _committed(bootstrap: str, prefix: str) -> bool:
    committed, ends = committed_offsets(bootstrap, prefix, f"{prefix}.events", partitions=1)
    return ends[0] > 0 and committed[0] >= ends[0]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_worker_audience_records_equal_replay(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = tmp_path / "audiences.yaml"
    config.write_text(yaml.safe_dump({"scenes": SCENES, "audiences": AUDIENCES}))
    replayed = tmp_path / "replay.jsonl"
    _cli("replay", str(REES46_SAMPLE), "--config", str(config), "--no-progress",
         "--out", str(replayed))
    expected: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
    for line in replayed.read_bytes().splitlines():
        record = orjson.loads(line)
        if record.get("kind") == "audience":
            del record["kind"]
            expected[f"{record['audience']}|{record['user_id']}".encode()].append(record)
    assert sum(map(len, expected.values())) > 100

    prefix = unique("t-aud")
    _cli("produce", str(REES46_SAMPLE), "--broker", kafka_bootstrap, "--topic",
         f"{prefix}.events", "--dead-letter-topic", f"{prefix}.produce-rejects",
         "--partitions", "1", "--no-progress")
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--partitions", "1"], config)
    try:
        wait_for("all events taken",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted")
                 >= EVENTS_IN_SAMPLE, 180, [worker])
        wait_for("all offsets committed", lambda: _committed(kafka_bootstrap, prefix), 60,
                 [worker])
        records, policy = asyncio.run(_read(kafka_bootstrap, f"{prefix}.audiences"))
    finally:
        worker.stop()
    assert policy == "compact"
    got: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        got[record.key].append(orjson.loads(record.value))
    assert got == expected  # per key, in order: what compaction keeps is the last of each
