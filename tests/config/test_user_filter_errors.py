"""Scene `user:` filter config: bad shapes and names are errors naming the
scene and the field; strategy-set tags are refused with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from config.loader import load_config, load_config_text, validate_config
from triggers import ConfigError
from triggers.classify import BEHAVIOUR_TAGS

ARRIVAL: dict[str, Any] = {"kind": "arrival", "when": {"type": "view"}}
CART: dict[str, Any] = {"kind": "absence", "start": {"type": "cart"}, "after": "30m"}
REPEAT: dict[str, Any] = {"kind": "repeat", "when": {"type": "view"}, "count": 3,
                          "within": "30m"}


def problems(scene: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config({"scenes": {"my_scene": scene}})
    return info.value.problems


@pytest.mark.parametrize("base", [ARRIVAL, CART, REPEAT])
@pytest.mark.parametrize(
    ("user", "field", "fragment"),
    [
        ({"tags": {"all": ["churned"]}}, "user.tags.all.0", "unknown tag 'churned'"),
        ({"tags": {"any": ["tod:night", "prefers_wechat"]}}, "user.tags.any.1",
         "tags set by strategies"),
        ({"tags": {"none": ["tod:noon"]}}, "user.tags.none.0", "unknown tag 'tod:noon'"),
        ({"tags": {"all": ["segment:vip"]}}, "user.tags.all.0", "segment:<champion|loyal"),
        ({"segment": {"in": ["vip"]}}, "user.segment.in.0", "'champion'"),
        ({"segment": "vip"}, "user.segment.in.0", "'champion'"),
        ({"style": {"in": ["impulsive"]}}, "user.style.in.0", "'search_driven'"),
        ({"style": {"in": []}}, "user.style.in", "at least 1"),
        ({"style": {"in": "search_driven"}}, "user.style.in", "valid list"),
        ({"style": {"in": ["search_driven"], "prefix": "s"}}, "user.style.prefix",
         "unknown field"),
        ({"segment": 3}, "user.segment", "valid dictionary"),
        ({"tags": {"all": "weekday"}}, "user.tags.all", "valid list"),
        ({"tags": {"any": []}}, "user.tags.any", "at least 1"),
        ({"tags": {"some": ["weekday"]}}, "user.tags.some", "unknown field"),
        ({"tags": {}}, "user.tags", "at least one of all, any, none"),
        ({"tags": {"all": ["weekday"], "none": ["weekday"]}}, "user.tags", "both all and none"),
        ({"tags": {"all": ["tod:night", "tod:morning"]}}, "user.tags", "never hold together"),
        ({"channel": "wechat"}, "user.channel", "unknown field"),
        ({}, "user", "at least one of tags, segment, style"),
        ("loyal", "user", "valid dictionary"),
    ],
)
def test_bad_user_filter_names_scene_and_field(base: dict[str, Any], user: Any, field: str,
                                               fragment: str) -> None:
    found = problems({**base, "user": user})
    assert len(found) == 1, found
    assert found[0].startswith(f"scene 'my_scene', field '{field}': "), found
    assert fragment in found[0], found


def test_every_behaviour_tag_is_accepted() -> None:
    for tag in sorted(BEHAVIOUR_TAGS):
        config = validate_config({"scenes": {"s": {**ARRIVAL, "user": {"tags": {"any": [tag]}}}}})
        scene = config.scene_list()[0]
        assert scene.user is not None and scene.user.tags_any == {tag}
    # 4 day parts, weekday/weekend, worktime, 4 styles, 4 segments, 4 purchase cycles
    assert len(BEHAVIOUR_TAGS) == 19


def test_filter_takes_the_content_thresholds_and_default_zone() -> None:
    config = load_config_text("""
scenes:
  cart_abandonment:
    kind: absence
    start: {type: cart}
    after: 30m
    user: {tags: {none: [tod:night]}, segment: champion, style: {in: [search_driven]}}
content:
  segments: {champion_min_purchases: 5}
delivery: {default_timezone: Asia/Shanghai}
""")
    user = config.scene_list()[0].user
    assert user is not None
    assert user.segments == frozenset({"champion"})
    assert user.styles == frozenset({"search_driven"})
    assert user.tags_none == {"tod:night"} and not user.tags_all and not user.tags_any
    assert user.rules.segments.champion_min_purchases == 5
    assert user.rules.default_tz == "Asia/Shanghai"


def test_shipped_scenes_have_no_filter() -> None:
    assert [s.user for s in load_config().scene_list()] == [None, None, None]
