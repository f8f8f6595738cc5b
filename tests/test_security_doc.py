"""docs/security.md names the test behind each line: every test file and
test function it names exists (a renamed or deleted test fails here, not in
a reader's hands). ``::name`` right after a ``path::name`` reference, as in
"`tests/a.py::one`, `::two`", names another test of the same file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECURITY = REPO / "docs" / "security.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}


def test_every_test_the_threat_model_names_exists() -> None:
    text = SECURITY.read_text()
    named: list[tuple[str, str | None]] = []
    current = None
    for path, name in REFERENCE.findall(text):
        if path:
            current = path
        elif not name:
            continue
        assert current is not None, f"`::{name}` with no file before it"
        named.append((current, name or None))
    assert len(named) >= 10
    missing = []
    for path, name in named:
        file = REPO / path
        if not file.is_file():
            missing.append(path)
        elif name is not None and name not in _tests_in(file):
            missing.append(f"{path}::{name}")
    assert missing == []
