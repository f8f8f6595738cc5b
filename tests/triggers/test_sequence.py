"""``sequence``: first, then ``then`` within ``within``, no ``unless`` in
between (docs/semantics-notes.md, "The sequence kind")."""

from __future__ import annotations

from typing import Any

import pytest

from config.loader import validate_config
from scenetrigger.cli.change.check_config import describe
from tests.triggers.helpers import engine, ev, feed, run
from triggers.errors import ConfigError
from triggers.reshape import Reset, resets
from triggers.state import UserState

MIN = 60_000
# searched, then viewed a product of that query's category within 10 minutes, no cart
SEARCH_THEN_VIEW: dict[str, Any] = {"kind": "sequence", "first": {"type": "search"},
                                    "then": {"type": "view"}, "within": "10m",
                                    "unless": {"type": "cart"}, "per": "category"}


def scenes(**changes: Any) -> dict[str, Any]:
    return {"sv": {**SEARCH_THEN_VIEW, **changes}}


def test_fires_on_then_after_first_within_the_window_keyed_by_per() -> None:
    got = run(scenes(), [ev("u", 0, "search", category="shoes"),
                         ev("u", 5 * MIN, "view", category="bags"),  # another category
                         ev("u", 6 * MIN, "view", category="shoes"),
                         ev("u", 7 * MIN, "view", category="shoes")])  # no cooldown: again
    assert got == [("sv", "u", "shoes", 6 * MIN), ("sv", "u", "shoes", 7 * MIN)]


def test_window_is_open_below_and_first_must_be_strictly_earlier() -> None:
    assert run(scenes(), [ev("u", 0, "search", category="c"),
                          ev("u", 10 * MIN, "view", category="c")]) == []  # e.ts - within
    assert run(scenes(), [ev("u", 1, "search", category="c"),
                          ev("u", 10 * MIN, "view", category="c")]) == [
        ("sv", "u", "c", 10 * MIN)]
    # the same millisecond is not "then": no order within one ts
    assert run(scenes(), [ev("u", 5, "search", category="c"),
                          ev("u", 5, "view", category="c")]) == []
    # one event matching both first and then does not make a sequence by itself
    both = scenes(first={"type": "view"}, then={"type": "view"})
    assert run(both, [ev("u", 5, "view", category="c")]) == []
    assert run(both, [ev("u", 5, "view", category="c"), ev("u", 6, "view", category="c")]) \
        == [("sv", "u", "c", 6)]


def test_unless_between_blocks_and_a_later_first_starts_again() -> None:
    events = [ev("u", 0, "search", category="c"), ev("u", 1 * MIN, "cart", category="c"),
              ev("u", 2 * MIN, "view", category="c")]
    assert run(scenes(), events) == []
    # a cart of another category is another key: it does not block
    assert run(scenes(), [events[0], ev("u", MIN, "cart", category="d"), events[2]]) == [
        ("sv", "u", "c", 2 * MIN)]
    # a cart before the search does not block; a search after the cart starts anew
    assert run(scenes(), [ev("u", 0, "cart", category="c"), ev("u", MIN, "search", category="c"),
                          ev("u", 2 * MIN, "view", category="c")]) == [("sv", "u", "c", 2 * MIN)]
    assert run(scenes(), [*events, ev("u", 3 * MIN, "search", category="c"),
                          ev("u", 4 * MIN, "view", category="c")]) == [("sv", "u", "c", 4 * MIN)]
    # an unless at the first's own ts counts as between
    assert run(scenes(), [ev("u", 0, "search", category="c"), ev("u", 0, "cart", category="c"),
                          ev("u", 1, "view", category="c")]) == []


def test_a_then_event_that_matches_unless_blocks_itself() -> None:
    own = scenes(unless={"type": "view", "sale": True})
    assert run(own, [ev("u", 0, "search", category="c"),
                     ev("u", 1, "view", category="c", sale=True)]) == []


def test_without_per_any_value_and_missing_per_field_is_ignored() -> None:
    plain = {"sv": {k: v for k, v in SEARCH_THEN_VIEW.items() if k != "per"}}
    assert run(plain, [ev("u", 0, "search"), ev("u", 1, "view", category="x")]) == [
        ("sv", "u", None, 1)]
    assert run(scenes(), [ev("u", 0, "search"), ev("u", 1, "view")]) == []


def test_cooldown_per_user_and_key() -> None:
    cool = scenes(cooldown="5m")
    events = [ev("u", 0, "search", category="c"), ev("u", 1, "view", category="c"),
              ev("u", 2, "view", category="c"), ev("v", 3, "search", category="c"),
              ev("v", 4, "view", category="c"), ev("u", 5 * MIN, "view", category="c"),
              ev("u", 5 * MIN + 1, "view", category="c")]  # cooldown over, search still in
    assert [(t[1], t[3]) for t in run(cool, events)] == [("u", 1), ("v", 4), ("u", 5 * MIN + 1)]


def test_late_events_use_the_window_as_taken() -> None:
    eng = engine(scenes())
    got = feed(eng, [ev("u", 10, "view", category="c"),  # nothing before it yet
                     ev("u", 5, "search", category="c"),  # late: no retroactive fire
                     ev("u", 11, "view", category="c")])
    assert got == [[], [], [("sv", "u", "c", 11)]]


def test_state_is_the_windows_slot_and_survives_encoding() -> None:
    eng = engine(scenes())
    feed(eng, [ev("u", 0, "search", category="c"), ev("u", 1, "cart", category="c")])
    state = eng.store.get("u")
    assert state is not None
    win = state.windows["sv"]["c"]
    assert (win.when, win.unless, win.last_fire) == ([0], [1], None)
    again = UserState.decode(state.encode()).windows["sv"]["c"]
    assert (again.when, again.unless) == ([0], [1])


def test_hot_reload_drops_what_a_changed_predicate_recorded() -> None:
    def plan(**changes: Any) -> Any:
        old = validate_config({"scenes": scenes()}).scene_list()
        return resets(old, validate_config({"scenes": scenes(**changes)}).scene_list()).get("sv")

    assert plan(then={"type": "page"}, within="1h", cooldown="1m") is None  # read when deciding
    first = plan(first={"type": "page"})
    assert first is not None and (first.when, first.unless, first.everything) == (
        True, False, False)
    unless = plan(unless={"type": "purchase"})
    assert unless is not None and (unless.when, unless.unless) == (False, True)
    assert plan(per="product_id") == Reset(everything=True)
    old = validate_config({"scenes": scenes()}).scene_list()
    repeat = validate_config({"scenes": {"sv": {"kind": "repeat", "when": {"type": "search"},
                                                "count": 2, "within": "10m"}}}).scene_list()
    assert resets(old, repeat)["sv"].everything  # another kind: nothing of it is kept


def test_config_names_the_scene_and_field_and_check_config_describes_it() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"scenes": {"sv": {"kind": "sequence", "first": {"type": "search"},
                                           "within": "10m", "afterwards": 1}}})
    text = "\n".join(info.value.problems)
    assert "scene 'sv', field 'then'" in text and "scene 'sv', field 'afterwards'" in text
    [scene] = validate_config({"scenes": scenes(cooldown="1h")}).scene_list()
    assert describe(scene) == ("sequence first ... then ... within 10m per category unless ..., "
                               "cooldown 1h")
