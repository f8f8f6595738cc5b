"""The package layers (and module sizes): triggers <- config <- channels <- strategies <- agents
<- scenetrigger. A package imports only from packages to its left (and from
itself), so the engine never learns about Redis and delivery never about
the Faust worker. Every import counts: module level, inside functions and
under ``TYPE_CHECKING`` (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from tests.paths import REPO_ROOT

LAYERS = ("triggers", "config", "channels", "strategies", "agents", "scenetrigger")
RANK = {name: rank for rank, name in enumerate(LAYERS)}


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import anywhere in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def upward_imports(package: str, source: str) -> list[tuple[int, str]]:
    """Imports of ``source`` (a module of ``package``) from a layer to its right."""
    own = RANK[package]
    return [(line, module) for line, module in imported_modules(source)
            if RANK.get(module.split(".")[0], -1) > own]


def test_no_package_imports_a_layer_above_it() -> None:
    problems = []
    modules = 0
    for package in LAYERS:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            modules += 1
            for line, module in upward_imports(package, path.read_text(encoding="utf-8")):
                problems.append(f"{path.relative_to(REPO_ROOT)}:{line}: {package} imports "
                                f"{module}")
    assert modules > 100  # the walk saw the tree, not an empty directory
    assert problems == [], "upward imports:\n" + "\n".join(problems)


def test_the_walk_sees_function_local_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import channels.base\n"
        "if TYPE_CHECKING:\n"
        "    from agents.topics import EVENTS\n"
        "def f() -> None:\n"
        "    import scenetrigger.cli\n"
        "    from strategies import actions\n"
        "    from . import sibling\n"
    )
    assert upward_imports("config", source) == [
        (2, "channels.base"), (4, "agents.topics"), (6, "scenetrigger.cli"), (7, "strategies")]
    assert upward_imports("scenetrigger", source) == []


def test_every_layer_is_a_package_here() -> None:
    assert [p for p in LAYERS if not (REPO_ROOT / p / "__init__.py").is_file()] == []



MODULE_LINES = 500  # no exceptions: a module over it is split by responsibility


def test_modules_stay_small() -> None:
    over = {}
    for package in LAYERS:
        for path in (REPO_ROOT / package).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            name = path.relative_to(REPO_ROOT).as_posix()
            if lines > MODULE_LINES:
                over[name] = lines
    assert over == {}, f"modules over {MODULE_LINES} lines: {over}"
