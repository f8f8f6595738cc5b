"""`repeat`: window, count, `per`, `unless` and cooldown boundaries."""

from __future__ import annotations

from typing import Any

from tests.triggers.helpers import engine, ev, feed, run

BASE: dict[str, Any] = {"kind": "repeat", "when": {"type": "view"}, "count": 3, "within": 100}
SHIPPED: dict[str, Any] = {**BASE, "per": "product_id", "unless": {"type": "purchase"},
                           "cooldown": "24h", "within": "30m"}


def keys_at(scenes: dict[str, Any], events: list[dict[str, Any]]) -> list[tuple[str | None, int]]:
    return [(key, ts) for _, _, key, ts in run(scenes, events)]


def test_fires_on_count_th_event_and_every_one_after_without_cooldown() -> None:
    events = [ev("u", t) for t in (0, 10, 20, 30)]
    assert keys_at({"r": BASE}, events) == [(None, 20), (None, 30)]


def test_window_lower_bound_is_excluded() -> None:
    # e.ts - within = 100: an event at exactly 100 is outside, at 101 inside
    assert keys_at({"r": BASE}, [ev("u", 100), ev("u", 150), ev("u", 200)]) == []
    assert keys_at({"r": BASE}, [ev("u", 101), ev("u", 150), ev("u", 200)]) == [(None, 200)]


def test_window_upper_bound_includes_ties_and_excludes_later_events() -> None:
    assert keys_at({"r": BASE}, [ev("u", 5), ev("u", 5), ev("u", 5)]) == [(None, 5)]
    # a late event does not see events newer than itself
    assert keys_at({"r": BASE}, [ev("u", 50), ev("u", 60), ev("u", 10)]) == []


def test_count_is_per_user() -> None:
    assert keys_at({"r": BASE}, [ev("a", 0), ev("b", 1), ev("a", 2), ev("b", 3)]) == []


def test_per_counts_each_value_apart_and_key_is_the_value_string() -> None:
    scenes = {"r": {**BASE, "per": "product_id"}}
    events = [ev("u", 0, product_id="a"), ev("u", 1, product_id="b"),
              ev("u", 2, product_id="a"), ev("u", 3, product_id="a")]
    assert keys_at(scenes, events) == [("a", 3)]


def test_numbers_and_strings_are_the_same_key() -> None:
    scenes = {"r": {**BASE, "per": "product_id"}}
    events = [ev("u", 0, product_id=7), ev("u", 1, product_id="7"), ev("u", 2, product_id=7)]
    assert keys_at(scenes, events) == [("7", 2)]
    # and so are user ids
    assert run({"r": BASE}, [ev(12, 0), ev("12", 1), ev(12, 2)]) == [("r", "12", None, 2)]


def test_missing_or_null_per_field_is_ignored() -> None:
    scenes = {"r": {**BASE, "per": "product_id", "count": 2}}
    events = [ev("u", 0, product_id="a"), ev("u", 1), ev("u", 2, product_id=None),
              ev("u", 3, product_id="b")]
    assert keys_at(scenes, events) == []


def test_empty_string_per_value_is_a_key() -> None:
    scenes = {"r": {**BASE, "per": "product_id", "count": 2}}
    assert keys_at(scenes, [ev("u", 0, product_id=""), ev("u", 1, product_id="")]) == [("", 1)]


def test_unless_in_window_blocks_and_leaves_window_after_within() -> None:
    scenes = {"r": {**BASE, "unless": {"type": "purchase"}}}
    events = [ev("u", 0, "purchase"), ev("u", 10), ev("u", 20), ev("u", 30), ev("u", 100),
              ev("u", 101)]
    # purchase at 0 is in every window up to e.ts = 99; at 100 it is out (0 == 100 - 100)
    assert keys_at(scenes, events) == [(None, 100), (None, 101)]


def test_unless_later_than_the_event_does_not_block_it() -> None:
    scenes = {"r": {**BASE, "unless": {"type": "purchase"}}}
    assert keys_at(scenes, [ev("u", 50, "purchase"), ev("u", 10), ev("u", 20), ev("u", 30)]) == [
        (None, 30)]


def test_unless_with_per_looks_only_at_the_same_key() -> None:
    scenes = {"r": {**BASE, "per": "product_id", "unless": {"type": "purchase"}}}
    events = [ev("u", 0, "purchase", product_id="b"), ev("u", 1, product_id="a"),
              ev("u", 2, product_id="a"), ev("u", 3, "purchase"),  # no per field: ignored
              ev("u", 4, product_id="a")]
    assert keys_at(scenes, events) == [("a", 4)]
    events[0] = ev("u", 0, "purchase", product_id="a")
    assert keys_at(scenes, events) == []


def test_unless_without_per_blocks_any_product() -> None:
    scenes = {"r": {**BASE, "unless": {"type": "purchase"}}}
    events = [ev("u", 0, "purchase", product_id="b"), ev("u", 1, product_id="a"),
              ev("u", 2, product_id="a"), ev("u", 3, product_id="a")]
    assert keys_at(scenes, events) == []


def test_event_matching_when_and_unless_blocks_itself() -> None:
    scenes = {"r": {**BASE, "count": 1, "unless": {"page": "/cart"}}}
    assert keys_at(scenes, [ev("u", 0, page="/cart")]) == []
    assert keys_at(scenes, [ev("u", 0, page="/home")]) == [(None, 0)]


def test_cooldown_boundary() -> None:
    scenes = {"r": {**BASE, "count": 1, "cooldown": 50}}
    # fired at 0; e.ts - f == 49 is blocked, == 50 fires again
    assert keys_at(scenes, [ev("u", 0), ev("u", 49), ev("u", 50), ev("u", 99)]) == [
        (None, 0), (None, 50)]


def test_cooldown_is_per_key_and_per_user() -> None:
    scenes = {"r": {**BASE, "count": 1, "cooldown": 50, "per": "product_id"}}
    events = [ev("u", 0, product_id="a"), ev("u", 1, product_id="b"), ev("v", 2, product_id="a"),
              ev("u", 3, product_id="a")]
    assert run(scenes, events) == [("r", "u", "a", 0), ("r", "u", "b", 1), ("r", "v", "a", 2)]


def test_cooldown_after_a_later_fire_blocks_a_late_event() -> None:
    scenes = {"r": {**BASE, "count": 1, "cooldown": 50}}
    # fired at 100; a late event at 90 has e.ts - f = -10 < cooldown
    assert keys_at(scenes, [ev("u", 100), ev("u", 90)]) == [(None, 100)]


def test_zero_cooldown_only_blocks_fires_from_the_future() -> None:
    scenes = {"r": {**BASE, "count": 1, "cooldown": "0ms"}}
    assert keys_at(scenes, [ev("u", 10), ev("u", 10), ev("u", 5)]) == [(None, 10), (None, 10)]


def test_shipped_scene_on_a_short_story() -> None:
    events = [ev("u", t * 60_000, product_id="p") for t in range(5)]
    assert keys_at({"r": SHIPPED}, events) == [("p", 120_000)]  # then 24h cooldown
    bought = [ev("u", 0, "purchase", product_id="p"), *events[1:4]]
    assert keys_at({"r": SHIPPED}, bought) == []


def test_triggers_of_one_event_come_in_config_order() -> None:
    one = {**BASE, "count": 1}
    arrival = {"kind": "arrival", "when": {}}
    assert [s for s, *_ in run({"z": one, "a": arrival}, [ev("u", 0)])] == ["z", "a"]
    assert [s for s, *_ in run({"a": arrival, "z": one}, [ev("u", 0)])] == ["a", "z"]


def test_each_event_returns_its_own_triggers() -> None:
    eng = engine({"r": {**BASE, "count": 2}})
    assert feed(eng, [ev("u", 0), ev("u", 1), ev("v", 2)]) == [[], [("r", "u", None, 1)], []]
