"""A slice of the fuzz stream through Kafka (issue 11): 5,000 mutated lines
posted to the `scenetrigger collector` process, the events topic, the scene
worker process. The worker's triggers are exactly replay's triggers for the
same lines (repeat and arrival scenes: they never depend on the clock), and
every line the collector refused is in its dead-letter topic with a reason."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from agents.producer import ensure_topics
from scenetrigger.cli.main import main
from tests.agents.kafka_read import read_topic
from tests.agents.test_collector_cli import _wait_healthy
from tests.agents.worker_support import WorkerProcess, start_worker, unique
from tests.faults.test_fuzz import mutated_stream
from tests.services import REPO, free_port
from triggers.events import REASONS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
LINES = 5_000
SCENES = {
    "repeat_view_no_purchase": {"kind": "repeat", "when": {"type": "view"}, "per": "product_id",
                                "count": 3, "within": "30m", "unless": {"type": "purchase"},
                                "cooldown": "24h"},
    "promo_arrival": {"kind": "arrival", "when": {"page": {"prefix": "/promo"}},
                      "per": "page", "cooldown": "1h"},
}


def _key(t: dict[str, Any]) -> tuple[str, str, str, int]:
    return (t["scene"], t["user_id"], str(t["key"]), t["ts"])


async def test_a_fuzz_slice_through_the_collector_and_the_worker(kafka_bootstrap: str,
                                                                 tmp_path: Path) -> None:
    lines = mutated_stream()[:LINES]
    config = tmp_path / "scenes.yaml"
    config.write_text(yaml.safe_dump({"scenes": SCENES}))
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    out = tmp_path / "replay.jsonl"
    assert main(["replay", str(path), "--config", str(config), "--no-progress", "--out",
                 str(out)]) == 0
    expected = sorted(_key(orjson.loads(x)) for x in out.read_bytes().splitlines())
    assert len(expected) > 50
    run = unique("fzk")
    await ensure_topics(kafka_bootstrap, [f"{run}.events", f"{run}.collector-rejects"], 4)
    port = free_port()
    log = tmp_path / "collector.log"
    with log.open("wb") as sink:
        collector = subprocess.Popen(  # noqa: ASYNC220 - a server for the test to talk to
            [sys.executable, "-m", "scenetrigger.cli.main", "collector", "--broker",
             kafka_bootstrap, "--port", str(port), "--topic", f"{run}.events",
             "--dead-letter-topic", f"{run}.collector-rejects"], cwd=REPO,
            env={**os.environ, "SCENETRIGGER_COLLECTOR_TOKEN": "t0ken"}, stdout=sink,
            stderr=subprocess.STDOUT)
    worker: WorkerProcess | None = None
    try:
        worker = start_worker(tmp_path, "w", kafka_bootstrap, run, run,
                              ["--clock", "event", "--store", "memory"], config)
        base = f"http://127.0.0.1:{port}"
        rejected = accepted = posted = 0
        async with aiohttp.ClientSession() as session:
            await _wait_healthy(session, f"{base}/healthz", collector, log)
            for start in range(0, LINES, 500):
                body = b"\n".join(lines[start:start + 500])
                # NDJSON: each non-blank line is one item (docs/collector.md).
                posted += sum(1 for line in body.split(b"\n") if line.strip())
                async with session.post(f"{base}/events", data=body, headers={
                        "Authorization": "Bearer t0ken",
                        "Content-Type": "application/x-ndjson"}) as resp:
                    assert resp.status in (202, 400), await resp.text()
                    answer = await resp.json()
                    accepted += answer["accepted"]
                    rejected += answer["rejected"]
        got: list[tuple[str, str, str, int]] = []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            records = await read_topic(kafka_bootstrap, f"{run}.triggers")
            got = sorted(_key(orjson.loads(r.value)) for r in records)
            if len(got) >= len(expected):
                break
            assert worker.alive(), worker.log_tail()
            await asyncio.sleep(1)
    finally:
        collector.terminate()
        collector.wait(timeout=30)
        if worker is not None:
            await asyncio.to_thread(worker.stop)
    assert got == expected
    dead = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap,
                                                            f"{run}.collector-rejects")]
    # Every posted line is accounted for: accepted, or refused and dead-lettered
    # with a known reason; the fuzz does refuse some (so the check is not vacuous).
    assert accepted + rejected == posted and rejected > 0
    assert len(dead) == rejected and {d["reason"] for d in dead} <= set(REASONS)
    print(f"fuzz through Kafka: {LINES} lines, {rejected} refused by the collector (all in "
          f"its dead-letter topic with a reason), {len(got)} triggers = replay's")
