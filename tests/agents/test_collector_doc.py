"""docs/collector.md's curl examples, run as written against a real
collector on a real Kafka: each answers what the doc says under it, and the
events they send are in the topic."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.agents.kafka_read import read_topic, record_events
from tests.doc_blocks import sh_blocks
from tests.services import REPO, free_port, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
DOC = REPO / "docs" / "collector.md"


def test_the_body_formats_doc_runs_as_written(kafka_bootstrap: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the doc's examples")
    blocks = [b for b in sh_blocks(DOC) if b.expected is not None]
    assert len(blocks) >= 5  # single, array, NDJSON, a reject, no token
    prefix = f"cdoc{uuid.uuid4().hex[:8]}"
    port = free_port()
    token = uuid.uuid4().hex
    env = {**os.environ, "SCENETRIGGER_COLLECTOR_TOKEN": token,
           "COLLECTOR": f"http://127.0.0.1:{port}"}
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "collector", "--broker", kafka_bootstrap,
             "--topic-prefix", prefix, "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, proc, log, 60)
        for block in blocks:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.script],
                                  cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, f"line {block.line}: {done.stderr}"
            assert block.expected is not None
            try:
                want = json.loads(block.expected)
            except ValueError:
                assert done.stdout.strip() == block.expected, f"line {block.line}"
            else:
                assert json.loads(done.stdout) == want, f"line {block.line}: {done.stdout}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stored = record_events(asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.events")))
    users = sorted(fields["user_id"] for _, fields in stored)
    assert users == ["ann", "ann", "bob", "bob", "bob", "bob"]
