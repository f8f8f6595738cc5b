"""docs/ads.md's audience and journey-step commands, run as written (replay
on the shared rees46 sample, check-config, jq): each block's output is the
answer the doc prints under it. The sections the ad sinks own are tested
with their code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_blocks import Block, sh_blocks
from tests.paths import SHARED
from tests.services import REPO

DOC = REPO / "docs" / "ads.md"
BIN = Path(sys.executable).parent
SECTIONS = ("## Audiences", "## Journey steps")


def own_blocks() -> list[Block]:
    """The blocks under this side's sections (to the next ``## `` heading)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    spans = []
    for i, line in enumerate(lines, 1):
        if line.startswith("## "):
            spans.append((i, line.strip() in SECTIONS))
    def ours(at: int) -> bool:
        owner = [mine for start, mine in spans if start <= at]
        return bool(owner) and owner[-1]
    return [b for b in sh_blocks(DOC) if ours(b.line)]


def test_the_ads_doc_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.fail("jq is needed to run the doc's examples")
    blocks = own_blocks()
    assert len([b for b in blocks if b.expected is not None]) >= 5
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for block in blocks:
        script = re.sub(r"\.\./shared/", f"{SHARED}/", block.script)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=180,
                              check=False)
        assert done.returncode == 0, f"line {block.line}: {done.stderr}"
        if block.expected is not None:
            assert done.stdout.strip() == block.expected, f"line {block.line}: {done.stdout}"
