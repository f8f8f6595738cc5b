"""Config errors name the scene and the field; check-config's exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.loader import (
    DEFAULT_CONFIG_PATH,
    check_text,
    load_config,
    load_config_text,
    validate_config,
)
from triggers import ConfigError, RepeatScene

GOOD: dict[str, Any] = {"kind": "repeat", "when": {"type": "view"}, "count": 3, "within": "30m"}


def problems(raw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    return info.value.problems


@pytest.mark.parametrize(
    ("scene", "field", "fragment"),
    [
        ({**GOOD, "colour": "red"}, "colour", "unknown field"),
        ({**GOOD, "within": "30 minutes"}, "within", "bad duration"),
        ({**GOOD, "within": "5w"}, "within", "bad duration"),
        ({**GOOD, "within": -1}, "within", "negative"),
        ({**GOOD, "cooldown": "9999999999999999d"}, "cooldown", "at most"),
        ({**GOOD, "within": True}, "within", "boolean"),
        ({**GOOD, "cooldown": "1.5h"}, "cooldown", "bad duration"),
        ({**GOOD, "count": 0}, "count", "greater than or equal to 1"),
        ({**GOOD, "count": "3"}, "count", "integer"),
        ({**GOOD, "when": ["view"]}, "when", "mapping"),
        ({**GOOD, "when": {"type": {"eq": "view"}}}, "when", "unknown condition eq"),
        ({**GOOD, "when": {"type": None}}, "when", "null"),
        ({**GOOD, "unless": {"page": {"prefix": 3}}}, "unless", "prefix"),
        ({**GOOD, "per": ""}, "per", "at least 1"),
        ({"kind": "sometimes", "when": {}}, "kind", "unknown kind 'sometimes'"),
        ({"when": {"type": "view"}}, "kind", "missing 'kind'"),
        ({"kind": "absence", "start": {"type": "cart"}}, "after", "missing"),
        ({"kind": "absence", "start": {"type": "cart"}, "after": "30m", "count": 2}, "count",
         "unknown field"),
        ({"kind": "arrival", "when": {"page": {"in": "x"}}}, "when", "list"),
    ],
)
def test_every_scene_error_names_scene_and_field(scene: Any, field: str, fragment: str) -> None:
    found = problems({"scenes": {"my_scene": scene}})
    assert len(found) == 1, found
    assert found[0].startswith(f"scene 'my_scene', field '{field}': "), found
    assert fragment in found[0]


def test_unknown_top_level_key_is_named() -> None:
    found = problems({"scenes": {"ok": GOOD}, "scene": {}})
    assert found == ["top level, field 'scene': unknown field (did you mean 'scenes'?)"]


def test_every_problem_is_listed_at_once() -> None:
    raw = {"scenes": {"a": {**GOOD, "count": 0}, "b": {**GOOD, "within": "x"}}, "extra": 1}
    found = problems(raw)
    assert len(found) == 3
    assert any(p.startswith("scene 'a', field 'count'") for p in found)
    assert any(p.startswith("scene 'b', field 'within'") for p in found)
    assert any(p.startswith("top level, field 'extra'") for p in found)


@pytest.mark.parametrize("raw", [None, [], "scenes", 5])
def test_top_level_must_be_a_mapping(raw: Any) -> None:
    assert "top level" in problems(raw)[0]


def test_yaml_cannot_construct_python_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f'scenes:\n  a: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert "not valid YAML" in info.value.problems[0]
    assert not marker.exists()
    with pytest.raises(ConfigError):
        load_config_text("scenes: !!python/object:builtins.dict {}\n")


def test_a_duplicate_key_is_an_error_not_a_silent_override() -> None:
    text = ("scenes:\n  a: {kind: arrival, when: {}}\n"
            "  a: {kind: repeat, when: {}, count: 2, within: 1s}\n")
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert "duplicate key 'a'" in info.value.problems[0]
    # a YAML merge key's values may still be overridden
    merged = load_config_text("scenes:\n  a: &a {kind: arrival, when: {}, cooldown: 1s}\n"
                              "  b:\n    <<: *a\n    cooldown: 2s\n")
    assert [s.cooldown_ms for s in merged.scene_list()] == [1_000, 2_000]  # type: ignore[attr-defined]


def test_json_is_accepted_and_durations_take_every_unit() -> None:
    units = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    for unit, size in units.items():
        spec = {"kind": "repeat", "when": {}, "count": 1, "within": f"7{unit}"}
        config = load_config_text(json.dumps({"scenes": {"r": spec}}))
        scene = config.scene_list()[0]
        assert isinstance(scene, RepeatScene)
        assert scene.within_ms == 7 * size
    config = load_config_text(yaml.safe_dump({"scenes": {"r": {**GOOD, "within": 1234}}}))
    scene = config.scene_list()[0]
    assert isinstance(scene, RepeatScene)
    assert scene.within_ms == 1234


def test_shipped_defaults_are_the_three_reference_scenes() -> None:
    shipped = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    assert shipped["scenes"] == {
        "repeat_view_no_purchase": {
            "kind": "repeat", "when": {"type": "view"}, "per": "product_id", "count": 3,
            "within": "30m", "unless": {"type": "purchase"}, "cooldown": "24h"},
        "cart_abandonment": {
            "kind": "absence", "start": {"type": "cart"}, "cancel": {"type": "purchase"},
            "after": "30m"},
        "promo_arrival": {
            "kind": "arrival", "when": {"page": {"prefix": "/promo"}}, "per": "page",
            "cooldown": "1h"},
    }
    assert [s.name for s in load_config().scene_list()] == list(shipped["scenes"])


def check_config(path: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_check_config_ok_prints_a_summary_and_exits_0() -> None:
    done = check_config(DEFAULT_CONFIG_PATH)
    assert done.returncode == 0, done.stderr
    assert "OK, 3 scene(s)" in done.stdout
    for name in ("repeat_view_no_purchase", "cart_abandonment", "promo_arrival"):
        assert name in done.stdout


def test_check_config_errors_exit_1_with_scene_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "colour: blue\n"
        "scenes:\n"
        "  a: {kind: repeat, when: {type: view}, count: 0, within: 30 minutes, bogus: 1}\n"
        "  b: {kind: sometimes}\n"
    )
    done = check_config(path)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"{path}: 5 error(s), 2 warning(s)"
    assert lines[1:6] == [  # in line order, each with its file and line
        f"  - {path}:1: top level, field 'colour': unknown field",
        f"  - {path}:3: scene 'a', field 'count': Input should be greater than or equal to 1 "
        "(got 0)",
        f"  - {path}:3: scene 'a', field 'within': bad duration '30 minutes': use "
        "'<int><unit>' with unit ms, s, m, h or d, or an integer of milliseconds",
        f"  - {path}:3: scene 'a', field 'bogus': unknown field",
        f"  - {path}:4: scene 'b', field 'kind': unknown kind 'sometimes' (use repeat, "
        "absence, arrival, sequence, replenishment, date, back_in_stock, price_drop or new_arrival)",
    ]
    assert lines[6] == f"{path}: 2 warning(s)"
    assert all("no content in content.scenes" in line for line in lines[7:]), lines


@pytest.mark.parametrize(
    "text", ["scenes: {a: [\n", "scenes:\n  a: !!python/object/apply:os.getcwd []\n", "\xff"]
)
def test_check_config_unreadable_or_unsafe_exits_1(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("latin-1"))
    done = check_config(path)
    assert done.returncode == 1
    assert "error" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_missing_file_exits_1(tmp_path: Path) -> None:
    done = check_config(tmp_path / "nope.yaml")
    assert done.returncode == 1
    assert "cannot read" in done.stderr


def test_broken_yaml_names_the_files_line_not_pyyamls_stream() -> None:
    report = check_text("scenes:\n  a: {kind: repeat\n  b: 1\n", "tuned.yaml")
    [problem] = report.errors
    assert (problem.file, problem.line) == ("tuned.yaml", 3)
    assert str(problem).startswith("tuned.yaml:3: not valid YAML: while parsing a flow mapping")
    assert "<unicode string>" not in str(problem)
