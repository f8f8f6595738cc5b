"""check-config finds every mistake of a file in one run, each with its line
and, for a misspelled name, the name it most likely meant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.loader import check_text, load_config_text
from triggers.errors import ConfigError

TEN_MISTAKES = """\
scenes:
  viewed:
    kind: repaet
    when: {type: view}
    count: 3
    within: 30 minutes
    cooldwn: 1h
  abandoned:
    kind: absence
    start: {type: cart}
    after: 30m
channels:
  push_main: {type: log}
content:
  scenes:
    abandonned:
      variants:
        - name: v1
          subject: Hi
          text: Hello ${usr}
strategies:
  journeys:
    nudge:
      entry:
        scene: abandon
        tags: {all: [vip_club]}
      steps:
        - id: first
          send: {channel: push_mian, content: nudge_1}
        - branch:
            within: 2d
            when: [{event: opened, goto: frist}]
"""

# (line, severity, fragment of the message, the close name offered or None)
EXPECTED = [
    (3, "error", "field 'kind': unknown kind 'repaet'", "repeat"),
    (6, "error", "scene 'viewed', field 'within': bad duration '30 minutes'", None),
    (7, "error", "scene 'viewed', field 'cooldwn': unknown field", "cooldown"),
    (16, "warning", "content.scenes 'abandonned': no scene named 'abandonned'", "abandoned"),
    (18, "error", "unknown placeholder(s) ${usr}", None),
    (25, "error", "strategy 'nudge', field 'entry.scene': no scene named 'abandon'", "abandoned"),
    (26, "warning", "field 'entry.tags.all': nothing sets tag 'vip_club'", None),
    (29, "warning", "step 1 ('first'), field 'send.channel': no channel named 'push_mian'",
     "push_main"),
    (29, "error", "step 1 ('first'), field 'send.content': no content 'nudge_1'", None),
    (32, "error", "step 2, field 'branch.when.0.goto': no step with id 'frist'", "first"),
]


def test_ten_mistakes_are_all_found_with_lines_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "ten.yaml"
    path.write_text(TEN_MISTAKES)
    done = subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "check-config", str(path), "--json"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False
    found = [*result["errors"], *result["warnings"]]
    for line, severity, fragment, hint in EXPECTED:
        matches = [p for p in found if fragment in p["message"]]
        assert len(matches) == 1, (fragment, found)
        problem = matches[0]
        assert (problem["line"], problem["severity"], problem["hint"]) == (line, severity, hint)
        assert problem["file"] == str(path)
    # nothing reported twice, and nothing but the mistakes and the missing content
    messages = [p["message"] for p in found]
    assert len(messages) == len(set(messages))
    extra = [m for m in messages if not any(f in m for _, _, f, _ in EXPECTED)]
    assert sorted(extra) == [
        "scene 'abandoned': no content in content.scenes, shipped or this config's (its "
        "triggers get the generic message)",
        "scene 'viewed': no content in content.scenes, shipped or this config's (its "
        "triggers get the generic message)",
    ]


def test_the_human_output_says_did_you_mean_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ten.yaml"
    path.write_text(TEN_MISTAKES)
    done = subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"  - {path}:7: scene 'viewed', field 'cooldwn': unknown field (did you mean " \
           "'cooldown'?)" in done.stderr.splitlines()
    assert f"{path}: 7 error(s), 5 warning(s)" in done.stderr


def test_loading_raises_every_error_with_file_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(TEN_MISTAKES, source="ten.yaml")
    assert len(info.value.problems) == 7
    assert "ten.yaml:25: strategy 'nudge', field 'entry.scene': no scene named 'abandon' " \
           "(did you mean 'abandoned'?)" in info.value.problems


def test_a_good_config_has_a_summary_with_filters_and_strategies(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(
        "scenes:\n"
        "  cart_abandonment:\n"
        "    kind: absence\n    start: {type: cart}\n    after: 30m\n"
        "    user: {segment: loyal, tags: {none: [weekend]}}\n"
        "strategies:\n"
        "  journeys:\n"
        "    nudge:\n"
        "      entry: {scene: cart_abandonment}\n"
        "      steps: [{wait: 1d}, {tag: {add: [nudged]}}]\n")
    report = check_text(path.read_text(), str(path))
    assert report.errors == []
    done = subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "OK, 1 scene(s), 1 strategy(ies)" in done.stdout
    assert "only users: tags none of weekend; segment in loyal" in done.stdout
    assert "strategy nudge" in done.stdout and "on scene cart_abandonment: wait > tag" \
        in done.stdout


def test_an_included_strategies_file_has_its_own_lines(tmp_path: Path) -> None:
    included = tmp_path / "journeys.yaml"
    included.write_text("nudge:\n  entry: {scene: promo_arrival}\n  steps:\n"
                        "    - wait: 1 day\n    - {send: {channel: push, content: reactivation_push_1, colour: 1}}\n")
    from config.loader import DEFAULT_CONFIG_PATH

    text = DEFAULT_CONFIG_PATH.read_text() + f"strategies: {{include: [{included}]}}\n"
    report = check_text(text, "main.yaml")
    assert [(p.file, p.line, p.text.split(":")[0]) for p in report.errors] == [
        (str(included), 4, "strategy 'nudge', step 1, field 'wait'"),
        (str(included), 5, "strategy 'nudge', step 2, field 'send.colour'"),
    ]



def test_a_cross_reference_in_an_included_file_has_that_files_line(tmp_path: Path) -> None:
    included = tmp_path / "journeys.yaml"
    included.write_text("nudge:\n  entry: {scene: promo_arrivl}\n  steps:\n"
                        "    - {send: {channel: push, content: reactivation_push_1}}\n")
    from config.loader import DEFAULT_CONFIG_PATH

    text = DEFAULT_CONFIG_PATH.read_text() + f"strategies: {{include: [{included}]}}\n"
    report = check_text(text, "main.yaml")
    assert [(p.file, p.line, p.hint) for p in report.errors] == [
        (str(included), 2, "promo_arrival")]

def test_close_names_reach_channels_delivery_steps_and_variants() -> None:
    text = """\
scenes:
  a: {kind: arrival, when: {type: cart}, user: {segmnt: loyal}}
channels:
  hook: {type: webhook, url: "http://x", secert_env: X}
  mail: {type: emial}
delivery:
  caps: {per_dya: 3}
strategies:
  journeys:
    s:
      entry: {scene: a}
      steps:
        - sned: {channel: hook, content: x}
"""
    found = {(p.line, p.text.split(": ")[0], p.hint) for p in check_text(text, "h.yaml").errors}
    assert {
        (2, "scene 'a', field 'user.segmnt'", "segment"),
        (4, "channel 'hook', field 'secert_env'", "secret_env"),
        (5, "channel 'mail', field 'type'", "email"),
        (7, "section 'delivery', field 'caps.per_dya'", "per_day"),
        (13, "strategy 's', step 1, field 'sned'", "send"),
    } <= found, found


def test_audience_names_a_channel_type_and_real_scenes() -> None:
    text = """\
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
delivery:
  audience: {consent: {emial: opt_in}, transactional_scenes: [promo_arival]}
"""
    report = check_text(text, "a.yaml")
    assert [(p.line, p.hint) for p in report.errors] == [(4, "email")]
    assert [(p.line, p.hint) for p in report.warnings] == [(4, "promo_arrival")]
    assert "not a channel type" in report.errors[0].text


def test_a_misspelt_event_type_is_a_warning_with_its_line() -> None:
    text = """\
scenes:
  viewed:
    kind: repeat
    when: {type: {in: [veiw, search]}}
    count: 2
    within: 10m
    unless: {type: purchse}
  abandoned: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
  wished: {kind: arrival, when: {type: wishlist}}
"""
    report = check_text(text, "t.yaml")
    assert report.errors == []
    typos = [(p.line, p.hint) for p in report.warnings if "event type" in p.text]
    assert typos == [(4, "view"), (7, "purchase")]  # a custom type far from all is fine
    assert any("field 'unless.type'" in p.text for p in report.warnings)


def test_a_strategy_straight_under_strategies_says_where_it_goes() -> None:
    text = """\
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
strategies:
  nudge:
    entry: {scene: promo_arrival}
    steps: [{id: s1, send: {channel: push, content: reactivation_push_1}}]
  inclde: [reactivation]
"""
    errors = check_text(text, "s.yaml").errors
    assert [(p.line, p.hint) for p in errors] == [(4, None), (7, "include")]
    assert "goes under strategies.journeys" in errors[0].text and "journeys: {nudge: ...}" in \
        errors[0].text
