"""docs/ads.md, "On-site slots": its shell blocks run as written, each
printing the answer the doc promises (the config error, the signature,
the report's slot row)."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_blocks import sh_blocks
from tests.services import REPO

DOC = REPO / "docs" / "ads.md"
BIN = Path(sys.executable).parent


def test_the_slot_section_runs_as_written(tmp_path: Path) -> None:
    for tool in ("jq", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed to run the doc's examples")
    text = DOC.read_text(encoding="utf-8")
    start = text.count("\n", 0, text.index("## On-site slots")) + 1
    blocks = [b for b in sh_blocks(DOC) if b.line > start]  # the last section of the page
    assert "\n## " not in text[text.index("## On-site slots") + 1:]
    assert len([b for b in blocks if b.expected is not None]) == 4
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    for block in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.script], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, f"line {block.line}: {done.stderr}"
        assert done.stdout.strip() == block.expected, f"line {block.line}: {done.stdout}"
    # the formula the doc shows, computed here: "slot\n" + user + "\n" + exp
    doc_vector = hmac.new(b"change-me", b"slot\nann\n1796680000", hashlib.sha256).hexdigest()
    assert text.count(doc_vector) == 2  # openssl's and slot-sig's answers
