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
        "    import scenetrigger.cli.main\n"
        "    from strategies import actions\n"
        "    from . import sibling\n"
    )
    assert upward_imports("config", source) == [
        (2, "channels.base"), (4, "agents.topics"), (6, "scenetrigger.cli.main"), (7, "strategies")]
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


# Inside two layers, packages by role (docs/architecture.md, "Packages by role").
# A role package imports, from its own layer, only the role packages listed here.
ROLES: dict[str, dict[str, frozenset[str]]] = {
    "channels": {
        "feedback": frozenset(),  # what came back (events, sinks, the decision log): the bottom
        "transports": frozenset(),  # how a message leaves: never who, what or whether
        "audience": frozenset({"feedback"}),  # a consent change is a feedback event
        "content": frozenset({"audience"}),  # what it says: for this recipient (locale, zone)
        "policy": frozenset({"audience"}),  # whether and when: asks the audience
        # ad-platform audience sync: not a message (no pipeline, content, caps);
        # the webhook signature, Retry-After and retry policy are the transports',
        # the holdout hash is the control groups' (policy/control.py)
        "ads": frozenset({"audience", "feedback", "transports", "policy"}),
    },
    "scenetrigger": {
        "runtime": frozenset(),  # the runtimes every other role builds on
        "serve": frozenset(),  # serving an aiohttp app, for any role
        "ops": frozenset({"runtime"}),  # explain replays as replay does
        "demo": frozenset({"runtime", "serve"}),
        "console": frozenset({"runtime", "serve", "ops"}),
        "cli": frozenset({"runtime", "serve", "ops", "demo", "console"}),
    },
}
# Modules at the top of channels/ that put the parts together: no part imports
# them. The other top modules (the contract: base, errors, orders, and shared
# infrastructure) import no part.
COMPOSITION = frozenset({"pipeline", "assembly", "delivery_runtime", "kafka_delivery", "arms"})
FOLDER_MODULES = 15


def imported_names(source: str) -> list[tuple[int, str]]:
    """Every absolute import, ``from a import b`` also as ``a.b`` (b may be a
    module), in line order."""
    found = list(imported_modules(source))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return sorted(found, key=lambda item: item[0])


def role_problems(layer: str, parts: tuple[str, ...], source: str) -> list[str]:
    """What a module of ``layer`` at ``parts`` (its dotted path below the layer)
    imports against the role rules."""
    roles = ROLES[layer]
    own = parts[0] if len(parts) > 1 else None
    problems = []
    seen = set()
    for line, module in imported_names(source):
        names = module.split(".")
        if names[0] != layer or len(names) < 2 or (line, names[1]) in seen:
            continue
        target = names[1]
        seen.add((line, target))
        if own is None:
            if target in roles and parts[0] not in COMPOSITION:
                problems.append(f"{line}: {'.'.join(parts)} (below the parts) imports {module}")
        elif target in roles:
            if target != own and target not in roles[own]:
                problems.append(f"{line}: {own} imports {module}")
        elif target in COMPOSITION:
            problems.append(f"{line}: {own} imports the composition {module}")
    return problems


def test_role_packages_are_the_ones_listed() -> None:
    for layer, roles in ROLES.items():
        found = {p.parent.name for p in (REPO_ROOT / layer).glob("*/__init__.py")}
        assert found == set(roles), layer


def test_role_packages_import_only_what_they_may() -> None:
    problems = []
    for layer in ROLES:
        for path in sorted((REPO_ROOT / layer).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT / layer).with_suffix("").parts
            for problem in role_problems(layer, parts, path.read_text(encoding="utf-8")):
                problems.append(f"{path.relative_to(REPO_ROOT)}:{problem}")
    assert problems == [], "role imports:\n" + "\n".join(problems)


def test_the_role_rules_see_a_bad_import() -> None:
    source = ("from channels.policy.decide import DeliveryPolicy\n"
              "from channels import pipeline\n"
              "import channels.audience.consent\n")
    assert role_problems("channels", ("transports", "webhook"), source) == [
        "1: transports imports channels.policy.decide",
        "2: transports imports the composition channels.pipeline",
        "3: transports imports channels.audience.consent"]
    assert role_problems("channels", ("base",), source) == [
        "1: base (below the parts) imports channels.policy.decide",
        "3: base (below the parts) imports channels.audience.consent"]
    assert role_problems("channels", ("pipeline",), source) == []
    assert role_problems("scenetrigger", ("runtime", "replay"),
                         "from scenetrigger.cli.support import open_input\n") == [
        "1: runtime imports scenetrigger.cli.support"]


def test_no_module_sits_at_the_top_of_scenetrigger() -> None:
    assert sorted(p.name for p in (REPO_ROOT / "scenetrigger").glob("*.py")) == ["__init__.py"]


def test_no_flat_folder_over_fifteen_modules() -> None:
    over = {}
    for layer in ROLES:
        root = REPO_ROOT / layer
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > FOLDER_MODULES:
                over[folder.relative_to(REPO_ROOT).as_posix()] = len(modules)
    assert over == {}, f"folders over {FOLDER_MODULES} modules: {over}"
