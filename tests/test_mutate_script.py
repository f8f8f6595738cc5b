"""scripts/mutate.py's own wiring: every contract's runner names test files
that exist, every listed equivalent names a contract module and a reason,
and --changed-since picks the modules a change touched."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_script", ROOT / "scripts" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutate_script"] = module
    spec.loader.exec_module(module)
    return module


def test_every_runner_and_listed_equivalent_is_real() -> None:
    mutate = load()
    assert mutate.CONTRACTS
    for module, (tests, goal) in mutate.CONTRACTS.items():
        assert (ROOT / module).is_file(), module
        assert tests and all((ROOT / t).exists() for t in tests), module
        assert goal in (0.90, 0.95)
    listed = json.loads((ROOT / "tests" / "mutants_equivalent.json").read_text("utf-8"))
    assert listed
    for entry in listed:
        assert entry["module"] in mutate.CONTRACTS and entry["why"].strip(), entry
        assert entry["before"].strip() != entry["after"].strip(), entry


def test_changed_since_picks_the_touched_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    mutate = load()
    diff = "channels/policy/control.py\ntests/triggers/test_repeat.py\nREADME.md\n"

    def run(args: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        assert args[:3] == ["git", "diff", "--name-only"] and args[3] == "origin/main"
        return subprocess.CompletedProcess(args, 0, diff, "")

    monkeypatch.setattr(mutate.subprocess, "run", run)
    assert mutate.changed_modules(sorted(mutate.CONTRACTS), "origin/main") == [
        "channels/policy/control.py", "triggers/kinds/repeat.py"]
    diff = "docs/testing.md\n"
    assert mutate.changed_modules(sorted(mutate.CONTRACTS), "origin/main") == []
