"""docs/catalog.md's commands, run as written against a real Kafka and a real
``serve --broker`` (on a real Redis): each block's output holds what the doc
says under it (for a JSON object: those keys with those values)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.doc_blocks import sh_blocks
from tests.services import REPO, free_port, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
DOC = REPO / "docs" / "catalog.md"
BIN = Path(sys.executable).parent


def holds(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and got[k] == v for k, v in want.items())
    return bool(got == want)


def test_the_catalog_doc_runs_as_written(kafka_bootstrap: str, redis_url: str,
                                         tmp_path: Path) -> None:
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to run the doc's examples")
    blocks = sh_blocks(DOC)
    assert len([b for b in blocks if b.expected is not None]) >= 6
    prefix = f"cdoc{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {**os.environ, "SCENETRIGGER_CATALOG_TOKEN": uuid.uuid4().hex,
           "SCENETRIGGER_HASH_KEY": uuid.uuid4().hex, "BROKER": kafka_bootstrap,
           "SERVE": f"http://127.0.0.1:{port}", "PATH": f"{BIN}:{os.environ['PATH']}"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "scenetrigger"), "serve", "--broker", kafka_bootstrap, "--topic-prefix",
             prefix, "--port", str(port), "--redis-url", redis_url],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, proc, log, 90)
        for block in blocks:
            script = block.script.replace("--topic-prefix shop", f"--topic-prefix {prefix}")
            script = script.replace("shop.dead-letters", f"{prefix}.dead-letters")
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=120,
                                  check=False)
            assert done.returncode == 0, f"line {block.line}: {done.stderr}"
            if block.expected is None:
                continue
            try:
                want = json.loads(block.expected)
            except ValueError:
                assert done.stdout.strip() == block.expected, f"line {block.line}"
            else:
                got = json.loads(done.stdout)
                assert holds(got, want), f"line {block.line}: {done.stdout}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
