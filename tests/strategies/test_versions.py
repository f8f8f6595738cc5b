"""Editing a live strategy: users inside keep their version; a bad edit is
rejected naming strategy, step and field, and the old version stays."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from config.loader import DEFAULT_CONFIG_PATH, load_config_text
from config.strategy_models import resolve_include
from strategies.journeys import JourneyEngine
from strategies.model import Registry
from strategies.state import BytesJourneyStore
from tests.strategies.helpers import DAY, T0, sends, trigger
from triggers.errors import ConfigError


def raw_reactivation() -> dict[str, Any]:
    raw = yaml.safe_load(resolve_include("reactivation").read_text())
    return dict(raw["reactivation"])


def edited() -> dict[str, Any]:
    """push_2 gets new content and the first wait shrinks to one day."""
    raw = copy.deepcopy(raw_reactivation())
    raw["steps"][1]["branch"]["within"] = "1d"
    raw["steps"][2]["send"]["content"] = "reactivation_push_2_v2"
    return raw


def registry() -> Registry:
    from tests.strategies.helpers import shipped

    return Registry(shipped())


def test_users_inside_keep_their_version_new_entrants_get_the_edit() -> None:
    reg = registry()
    eng = JourneyEngine(reg)
    eng.on_trigger(trigger("old", T0))
    assert reg.edit("reactivation", edited()) == 2
    eng.on_trigger(trigger("new", T0 + 1))
    assert eng.position("old", "reactivation") == (1, "wait_open_1")
    assert eng.position("new", "reactivation") == (2, "wait_open_1")
    early = sends(eng.advance(T0 + DAY + 2))
    assert [(s.user_id, s.content_ref, s.version) for s in early] == [
        ("new", "reactivation_push_2_v2", 2)]
    late = sends(eng.advance(T0 + 2 * DAY + 1))
    assert [(s.user_id, s.content_ref, s.version) for s in late] == [
        ("old", "reactivation_push_2", 1)]


def test_an_unchanged_reload_keeps_the_version() -> None:
    reg = registry()
    assert reg.edit("reactivation", raw_reactivation()) == 1


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s[2]["send"].update(chanel="push"),
         "strategy 'reactivation', step 3 ('push_2'), field 'send.chanel': unknown field"),
        (lambda s: s[1]["branch"].update(within="2 weeks"),
         "strategy 'reactivation', step 2 ('wait_open_1'), field 'branch.within': bad duration"),
        (lambda s: s[5]["branch"].update({"else": "nowhere"}),
         "step 6 ('wait_open_3'), field 'branch.else': no step with id 'nowhere'"),
        (lambda s: s[9].update(enrol="no_such_strategy"),
         "strategy 'reactivation', step 10 ('enrol_winback'), field 'enrol': no strategy named"),
        (lambda s: s[0].update(wait="1d"),
         "strategy 'reactivation', step 1 ('push_1'): a step needs exactly one of"),
    ],
)
def test_a_bad_edit_is_rejected_naming_strategy_step_and_field(mutate: Any, expected: str) -> None:
    reg = registry()
    eng = JourneyEngine(reg)
    raw = copy.deepcopy(raw_reactivation())
    mutate(raw["steps"])
    with pytest.raises(ConfigError) as info:
        reg.edit("reactivation", raw)
    assert expected in str(info.value)
    current = reg.current("reactivation")
    assert current is not None and current.version == 1  # the old version stays
    out = sends(eng.on_trigger(trigger("u", T0)))
    assert [(s.content_ref, s.version) for s in out] == [("reactivation_push_1", 1)]


def test_config_errors_in_the_strategies_section_name_strategy_step_and_field() -> None:
    text = """
scenes: {}
strategies:
  journeys:
    s1:
      entry: {scene: x}
      steps:
        - {send: {channel: push}}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert "strategy 's1', step 1, field 'send.content': required field is missing" in str(
        info.value)


def test_included_files_load_through_the_app_config() -> None:
    scenes = DEFAULT_CONFIG_PATH.read_text()  # the entry scenes must exist
    config = load_config_text(scenes + "strategies: {include: [reactivation]}\n")
    assert sorted(config.strategies.all_journeys()) == ["reactivation", "winback"]
    with pytest.raises(ConfigError) as info:
        Registry(config.strategies.all_journeys(), scenes=frozenset({"cart_abandonment"}))
    assert "strategy 'reactivation', field 'entry.scene': no scene named " \
           "'repeat_view_no_purchase'" in str(info.value)


def test_after_a_restart_with_an_edited_config_runs_move_by_step_id() -> None:
    """The documented rule: a run whose version is gone continues at the step
    with the same id in the current version (restarting that step)."""
    table: dict[str, bytes] = {}
    eng = JourneyEngine(registry(), BytesJourneyStore(table))
    eng.on_trigger(trigger("u", T0))
    new_models = {"reactivation": edited(), "winback": None}
    from config.strategy_models import parse_strategies
    from tests.strategies.helpers import shipped

    models = dict(shipped())
    models["reactivation"] = parse_strategies({"reactivation": new_models["reactivation"]})[
        "reactivation"]
    fresh = JourneyEngine(Registry(models), BytesJourneyStore(table))
    fresh.rebuild_timers()
    out = fresh.advance(T0 + 2 * DAY + 1)
    # the old wait (2d) was due; the run moves to v1 of the new registry, which
    # is the edited content, at step 'wait_open_1' restarted at the deadline
    assert [a.kind for a in out] == []
    assert fresh.position("u", "reactivation") == (1, "wait_open_1")
    pushed = sends(fresh.advance(T0 + 3 * DAY + 1))
    assert [(s.content_ref, s.ts) for s in pushed] == [("reactivation_push_2_v2", T0 + 3 * DAY)]
