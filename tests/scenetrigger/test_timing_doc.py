"""docs/timing.md: the replenishment example's commands, run on the doc's
own config and events blocks, print what the doc shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "timing.md"


def _block(text: str, lang: str, nth: int = 0) -> str:
    return text.split(f"```{lang}\n")[nth + 1].split("```", 1)[0]


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_documented_replenishment_commands_print_what_the_doc_shows(tmp_path: Path) -> None:
    doc = DOC.read_text()
    (tmp_path / "refill.yaml").write_text(_block(doc, "yaml", 0))
    (tmp_path / "refill.jsonl").write_text(_block(doc, "jsonl"))
    console = _block(doc, "console")
    commands = [line for line in console.splitlines() if line.startswith("$ scenetrigger ")]
    assert len(commands) == 2
    got = ""
    for line in console.splitlines():
        if line.startswith("$ scenetrigger "):
            got += line + "\n" + _run(line.split()[2:], tmp_path)
    assert got == console
    # the pending timer the text names fires one ms after its deadline
    late = _run(["replay", "refill.jsonl", "--config", "refill.yaml", "--no-progress",
                 "--advance-to", "1703628800001"], tmp_path)
    assert late.splitlines()[-1] == (
        '{"scene":"refill","user_id":"bob","key":null,"ts":1703628800000}')


def _section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_documented_send_time_commands_print_what_the_doc_shows(tmp_path: Path) -> None:
    part = _section(DOC.read_text(), "Send-time optimisation")
    (tmp_path / "sendtime.yaml").write_text(_block(part, "yaml", 2))
    (tmp_path / "sendtime.jsonl").write_text(_block(part, "jsonl"))
    console = _block(part, "console").splitlines()
    replay, explain = (i for i, line in enumerate(console) if line.startswith("$ "))
    got = _run(console[replay].split()[2:], tmp_path)
    assert got.splitlines() == console[replay + 1:explain]
    timeline = _run(console[explain].split()[2:], tmp_path).splitlines()
    shown = [line for line in console[explain + 1:] if line != "..."]
    assert shown and all(line in timeline for line in shown), timeline


def test_the_documented_date_commands_print_what_the_doc_shows(tmp_path: Path) -> None:
    part = _section(DOC.read_text(), "Date triggers")
    (tmp_path / "dates.yaml").write_text(_block(part, "yaml"))
    (tmp_path / "dates.jsonl").write_text(_block(part, "jsonl"))
    console = _block(part, "console")
    command, *lines = console.splitlines()
    assert _run(command.split()[2:], tmp_path).splitlines() == lines
