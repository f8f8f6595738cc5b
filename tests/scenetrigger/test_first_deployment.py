"""docs/first-deployment.md, run as written: every ``sh`` block in order in
one bash, against the real services it starts (Kafka, Redis with AOF, an
aiosmtpd sink, worker, deliver, serve, collector). A new operator gets a real
email about the third view, the one-click unsubscribe withdraws the consent,
and the erasure removes the user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.doc_blocks import sh_blocks
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
DOC = REPO / "docs" / "first-deployment.md"
# If the doc fails half-way, stop what it started (its own last block does the same).
CLEANUP = ("trap 'kill $(jobs -p) 2>/dev/null || true; "
           "make -s kafka-down redis-down >/dev/null 2>&1 || true' EXIT\n")


def test_the_first_deployment_doc_runs_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(DOC)
    assert len(blocks) >= 9
    script = "set -euo pipefail\n" + CLEANUP + "".join(
        f"echo '>>> block at line {b.line}'\n{b.script}" for b in blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENETRIGGER_")}
    env.update({
        "SCENETRIGGER_KAFKA_RUN_DIR": str(tmp_path / "kafka"),
        "SCENETRIGGER_REDIS_RUN_DIR": str(tmp_path / "redis"),
        "SMTP_PORT": str(free_port()), "SERVE_PORT": str(free_port()),
        "COLLECTOR_PORT": str(free_port()), "WORK": str(tmp_path / "work"),
    })
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=560, check=False)
    logs = "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((tmp_path / "work").glob("*.log")))
    said = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}\n{logs}"
    assert done.returncode == 0, said
    out = done.stdout
    # the email: to Ann, personalised, with the one-click unsubscribe headers
    assert "To: ann@example.com" in out, said
    assert "Subject: Trail Running Shoe caught your eye" in out, said
    assert "Hello Ann, Trail Running Shoe is" in out, said
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out, said
    # the unsubscribe withdrew the consent; the erasure removed her
    assert "unsubscribed\n" in out and "'granted': False" in out, said
    assert "'source': 'one_click'" in out, said
    assert "ann is gone" in out and "no user 'ann'" in done.stderr, said
    # check-config --strict passed: it printed the summary
    assert "shop.yaml: OK, 1 scene(s)" in out, said
