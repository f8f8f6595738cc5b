"""docs/contributing.md's worked examples, run as written: the ``first_time``
scene kind (its module, registry entry, config model and config) replayed
over the rees46 sample, and the ``kinds`` command in ``scenetrigger --help``
with ``--help`` and ``--json``."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import yaml

import config.scene_models
from config.loader import load_config
from config.scene_models import model_kind
from scenetrigger.cli import main as cli_main
from scenetrigger.cli.change.check_config import describe
from scenetrigger.runtime.replay import replay
from scenetrigger.runtime.sources import read_for
from tests.paths import REES46_SAMPLE, REPO_ROOT
from triggers.events import Event, Trigger
from triggers.explain import explain_scene, fired_why
from triggers.host import EngineHost, InputRules
from triggers.kinds import KINDS, kind_of
from triggers.kinds.base import Limits
from triggers.userfilter import ClassifyRules

DOC = REPO_ROOT / "docs" / "contributing.md"
_BLOCK = re.compile(r"^```(\w+) (\w+)\n(.*?)^```", re.S | re.M)


def classify_rules() -> ClassifyRules:
    """The shipped config's thresholds, as ``AppConfig.scene_list`` builds them."""
    shipped = load_config(None)
    return ClassifyRules(shipped.content.styles, shipped.content.segments,
                         shipped.content.habits, shipped.delivery.default_timezone)


def doc_blocks() -> dict[str, str]:
    """The doc's named code blocks (```python NAME), by name."""
    return {m.group(2): m.group(3) for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def install(name: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> ModuleType:
    """``source`` as the module ``name`` (a file in ``tmp_path``), for this test only."""
    path = tmp_path / (name.rpartition(".")[2] + ".py")
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def first_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The doc's kind module installed as triggers.kinds.first_time and
    registered as the doc says; its config model defined as in
    config/scene_models.py."""
    blocks = doc_blocks()
    module = install("triggers.kinds.first_time", blocks["first_time"], tmp_path, monkeypatch)
    monkeypatch.setitem(KINDS, module.KIND.name, module.KIND)
    namespace = dict(vars(config.scene_models))
    exec(compile(blocks["first_time_model"], str(DOC), "exec"), namespace)
    yield namespace["FirstTimeModel"]


def test_the_doc_kind_replays_the_sample_as_its_rule_says(first_time: Any) -> None:
    assert model_kind(first_time) == "first_time" == kind_of(
        first_time.model_validate({"kind": "first_time", "when": {}}).to_scene(
            "x", classify_rules())).name
    scenes_config = yaml.safe_load(doc_blocks()["first_time_config"])["scenes"]
    scenes = [first_time.model_validate(body).to_scene(name, classify_rules())
              for name, body in scenes_config.items()]
    (scene,) = scenes
    assert describe(scene) == "first_time per category_id"

    host = EngineHost(scenes, Limits(), InputRules())
    fired: list[Trigger] = []
    events: list[Event] = []
    with REES46_SAMPLE.open("rb") as stream:
        records = list(read_for(host, stream, "rees46"))
    events = [item for _, item in records if isinstance(item, Event)]
    replay(records, host, fired.append)

    # The rule restated: each user's first view of each category, in input order.
    expected, seen = [], set()
    for event in events:
        category = event.fields.get("category_id")
        if event.type == "view" and category and (event.user_id, category) not in seen:
            seen.add((event.user_id, category))
            expected.append(Trigger(scene.name, event.user_id, category, event.ts))
    keys_per_user: dict[str, int] = {}
    for user, _category in seen:
        keys_per_user[user] = keys_per_user.get(user, 0) + 1
    assert max(keys_per_user.values()) < Limits().max_keys  # no eviction in this sample
    assert len(expected) > 100
    assert [(t.scene, t.user_id, t.key, t.ts) for t in fired] == [
        (t.scene, t.user_id, t.key, t.ts) for t in expected]

    user = fired[0].user_id
    mine = [e for e in events if e.user_id == user]
    theirs = [t for t in fired if t.user_id == user]
    told = explain_scene(scene, mine, theirs, mine[-1].ts)
    assert [f.trigger for f in told.fired] == theirs and told.missing is None
    assert fired_why(scene, fired[0]) == f"first view of category_id {fired[0].key}"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    try:
        code: int | str | None = cli_main.main(argv)
    except SystemExit as exit_:  # --help
        code = exit_.code
    return code, capsys.readouterr().out


def test_the_doc_command_is_listed_with_help_and_json(
        first_time: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    install("scenetrigger.cli.change.kinds", doc_blocks()["kinds_command"], tmp_path,
            monkeypatch)
    monkeypatch.setitem(cli_main.COMMANDS, "kinds", "scenetrigger.cli.change.kinds")

    code, out = _run(["--help"], capsys)
    assert code == 0 and re.search(r"^\s+kinds\s", out, re.M), out
    code, out = _run(["kinds", "--help"], capsys)
    assert code == 0 and "--json" in out
    code, out = _run(["kinds", "--json"], capsys)
    assert code == 0
    listed = orjson.loads(out)["kinds"]
    assert [k["kind"] for k in listed] == list(KINDS) and listed[-1] == {
        "kind": "first_time", "slot": "fires", "timer": False, "reads_profile": False}
    code, out = _run(["kinds"], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["repeat", "windows"]
    assert "absence        timer  (timer)" in out
