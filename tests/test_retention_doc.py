"""README, "Personal data and retention": every compacted topic the worker
creates holds users' records that an erasure only tombstones, so the
section names each one (an operator sets its compaction lag from it)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from agents import producer, replication
from agents.settings import TopicNames, WorkerSettings
from config.loader import load_config_text

REPO = Path(__file__).resolve().parents[1]


def test_the_retention_section_names_every_compacted_topic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compacted: list[str] = []

    async def ensure_topics(_bootstrap: str, names: Any, _partitions: int = 1,
                            configs: dict[str, dict[str, str]] | None = None,
                            replication: int | None = None) -> dict[str, int]:
        compacted.extend(n for n, c in (configs or {}).items()
                         if c.get("cleanup.policy") == "compact")
        return {}

    async def cluster_replication(_bootstrap: str, _requested: int | None) -> int:
        return 1

    monkeypatch.setattr(producer, "ensure_topics", ensure_topics)
    monkeypatch.setattr(replication, "cluster_replication", cluster_replication)
    settings = WorkerSettings(load_config_text("scenes: {}\n"),
                              topics=TopicNames.with_prefix("PREFIX"))
    asyncio.run(replication.ensure_worker_topics(settings, "b:9092", 1, None))
    readme = REPO.joinpath("README.md").read_text()
    section = readme.split("## Personal data and retention", 1)[1].split("\n## ", 1)[0]
    section = re.sub(r"\s+", " ", section)
    assert compacted and [t for t in compacted if f"`{t}`" not in section] == []
