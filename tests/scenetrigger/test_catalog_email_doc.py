"""docs/catalog.md, "From `catalog load` to a back-in-stock email", run as
written: its ``bash`` blocks in order in one bash, against the real services
they start (Kafka, Redis, an aiosmtpd sink, worker, fanout, deliver). Ann,
who asked for size 42, gets the email once 42 is back; Bob (43) gets none."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.doc_blocks import sh_blocks
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
DOC = REPO / "docs" / "catalog.md"
CLEANUP = ("trap 'kill $(jobs -p) 2>/dev/null || true; "
           "make -s kafka-down redis-down >/dev/null 2>&1 || true' EXIT\n")


def test_the_back_in_stock_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = sh_blocks(DOC, "bash")
    assert len(blocks) >= 7
    script = "set -euo pipefail\n" + CLEANUP + "".join(
        f"echo '>>> block at line {b.line}'\n{b.script}" for b in blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENETRIGGER_")}
    env.update({
        "SCENETRIGGER_KAFKA_RUN_DIR": str(tmp_path / "kafka"),
        "SCENETRIGGER_REDIS_RUN_DIR": str(tmp_path / "redis"),
        "SMTP_PORT": str(free_port()), "FANOUT_METRICS": str(free_port()),
        "WORK": str(tmp_path / "work"),
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
    })
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=560, check=False)
    logs = "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((tmp_path / "work").glob("*.log")))
    said = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}\n{logs}"
    assert done.returncode == 0, said
    out = done.stdout
    assert '{"sent":1}' in out, said
    assert ('[{"kind":"back_in_stock","product_id":"trail-shoe","category":"shoes",'
            '"variant":"42"}]') in out, said
    assert "To: ann@example.com" in out, said
    assert "Subject: Trail shoe is back in stock" in out, said
    # The product link, through serve's click tracking (quoted-printable).
    assert "Hello Ann, Trail shoe is back: http" in out, said
    assert "shop.example%2Fp%2Ftrail-shoe" in out, said
    mails = list((tmp_path / "work" / "mail" / "new").iterdir())
    assert len(mails) == 1, said
    assert "bob@example.com" not in out, said
