"""`arrival`: every matching event fires, unless in cooldown for (user, key)."""

from __future__ import annotations

from typing import Any

from tests.triggers.helpers import ev, run

PROMO: dict[str, Any] = {"kind": "arrival", "when": {"page": {"prefix": "/promo"}}}


def test_without_cooldown_every_matching_event_fires() -> None:
    events = [ev("u", 0, "page", page="/promo/a"), ev("u", 0, "page", page="/promo/a"),
              ev("u", 1, "page", page="/home")]
    assert run({"p": PROMO}, events) == [("p", "u", None, 0), ("p", "u", None, 0)]


def test_cooldown_boundary() -> None:
    scenes = {"p": {**PROMO, "cooldown": "1h"}}
    hour = 3_600_000
    events = [ev("u", t, "page", page="/promo") for t in (0, hour - 1, hour, 2 * hour - 1)]
    assert [ts for *_, ts in run(scenes, events)] == [0, hour]


def test_per_keys_cooldown_by_value() -> None:
    scenes = {"p": {**PROMO, "per": "page", "cooldown": 100}}
    events = [ev("u", 0, "page", page="/promo/a"), ev("u", 1, "page", page="/promo/b"),
              ev("u", 2, "page", page="/promo/a"), ev("v", 3, "page", page="/promo/a")]
    assert run(scenes, events) == [("p", "u", "/promo/a", 0), ("p", "u", "/promo/b", 1),
                                   ("p", "v", "/promo/a", 3)]


def test_missing_per_field_is_ignored_and_empty_string_is_a_key() -> None:
    scenes = {"a": {"kind": "arrival", "when": {"type": "view"}, "per": "product_id"}}
    events = [ev("u", 0), ev("u", 1, product_id=None), ev("u", 2, product_id="")]
    assert run(scenes, events) == [("a", "u", "", 2)]


def test_cooldown_without_per_spans_all_values() -> None:
    scenes = {"p": {**PROMO, "cooldown": 100}}
    events = [ev("u", 0, "page", page="/promo/a"), ev("u", 1, "page", page="/promo/b")]
    assert run(scenes, events) == [("p", "u", None, 0)]


def test_late_event_inside_a_later_cooldown_is_blocked() -> None:
    scenes = {"p": {**PROMO, "cooldown": 100}}
    events = [ev("u", 500, "page", page="/promo"), ev("u", 450, "page", page="/promo")]
    assert run(scenes, events) == [("p", "u", None, 500)]
