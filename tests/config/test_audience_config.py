"""The ``audiences:`` section is checked like the rest of the config: every
problem at once, each with its file, line and field (docs/ads.md)."""

from __future__ import annotations

import pytest

from config.loader import load_config_text
from triggers.errors import ConfigError

TEXT = """\
scenes:
  cart_abandonment: {kind: absence, start: {type: cart}, after: 30m}
audiences:
  a:
    fired: {scene: cart_abandonmnt, within: 2x}
  b:
    journey: true
    purchase: {within: 1h}
  c: {}
  d:
    lead_score: {min: 5, max: 2}
  e|f:
    locale: de
  g:
    purchase: {within: 1h, none_within: 2h}
  h:
    segment: vip
"""


def test_every_problem_of_the_section_is_named_with_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(TEXT, "ads.yaml")
    problems = caught.value.problems
    expected = [
        ("ads.yaml:5:", "audience 'a', field 'fired.within': bad duration '2x'"),
        ("ads.yaml:5:", "audience 'a', field 'fired.scene': no scene named 'cart_abandonmnt' "
                        "(did you mean 'cart_abandonment'?)"),
        ("ads.yaml:6:", "audience 'b': a journey audience has no conditions (found: purchase)"),
        ("ads.yaml:9:", "audience 'c': state at least one of"),
        ("ads.yaml:11:", "audience 'd', field 'lead_score': min 5.0 is above max 2.0"),
        ("ads.yaml:12:", "'e|f'"),  # the key's separator: never in a name
        ("ads.yaml:15:", "audience 'g', field 'purchase': give exactly one of"),
        ("ads.yaml:17:", "audience 'h', field 'segment.in.0'"),
    ]
    for where, text in expected:
        assert any(p.startswith(where) and text in p for p in problems), (where, text, problems)
    assert len(problems) == len(expected)


def test_a_good_section_builds_its_audiences_in_order() -> None:
    config = load_config_text(TEXT.split("audiences:")[0] + """\
audiences:
  carted: {fired: {scene: cart_abandonment, within: 1h}, consent: none}
  retarget: {journey: true}
""")
    (carted, retarget) = config.audience_list()
    assert (carted.name, carted.fired, carted.fired_within_ms, carted.consent) == (
        "carted", frozenset({"cart_abandonment"}), 3_600_000, None)
    assert (retarget.journey, retarget.consent) == (True, "ads")
    assert config.audience_tracker(object()) is not None  # type: ignore[arg-type]
