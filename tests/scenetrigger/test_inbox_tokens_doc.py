"""docs/security.md, "Inbox tokens": its shell blocks run as written, each
printing the answer the doc promises (openssl's signature, then
``scenetrigger inbox-token``'s token), and the doc's vector is the formula's,
computed here with hmac/hashlib."""

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

DOC = REPO / "docs" / "security.md"
BIN = Path(sys.executable).parent


def test_the_inbox_token_section_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to run the doc's examples")
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Inbox tokens\n")
    end = text.index("\n## ", start + 1)
    first, last = text.count("\n", 0, start) + 1, text.count("\n", 0, end) + 1
    blocks = [b for b in sh_blocks(DOC) if first < b.line < last]
    assert [b.expected is not None for b in blocks] == [True, True]
    env = {**{k: v for k, v in os.environ.items() if k != "SCENETRIGGER_INBOX_SECRET"},
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    for block in blocks:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.script], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"line {block.line}: {done.stderr}"
        assert done.stdout.strip() == block.expected, f"line {block.line}: {done.stdout}"
    vector = hmac.new(b"change-me", b"inbox\nann\n1796680000", hashlib.sha256).hexdigest()
    assert [b.expected for b in blocks] == [vector, f"1796680000.{vector}"]
