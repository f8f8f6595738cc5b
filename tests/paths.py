"""Where the shared sample data lives: ``../shared`` beside the repository
(as CI lays it out), or ``SCENETRIGGER_SHARED`` when set."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCENETRIGGER_SHARED", REPO_ROOT.parent / "shared"))
DATA = SHARED / "data"
REES46_SAMPLE = DATA / "rees46-2019-10-01-sample.csv"
OTTO_SAMPLE = DATA / "otto-sample.jsonl"
