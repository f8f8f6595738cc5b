"""The `repeat` rule alone (triggers/kinds/repeat.py; SEMANTICS.md "Kinds"):
what it returns for the caller's answers, what its windows hold (late
events, the entry cap, pruning at the horizon), the user filter, and how
the kind describes itself. Expected values are written out from the rule's
text (window ``(ts - within, ts]``, ``horizon = newest - within - late``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from triggers.events import Event, Trigger
from triggers.kinds.base import NO_KEY, Limits, canon
from triggers.kinds.repeat import KIND, RepeatScene
from triggers.predicates import parse_predicate
from triggers.profile import Profile
from triggers.state import KeyWindow, UserState
from triggers.userfilter import Refused

WHEN = parse_predicate({"type": "view"})
UNLESS = parse_predicate({"type": "purchase"})
VIEW: dict[str, Any] = {"type": "view"}
BUY: dict[str, Any] = {"type": "purchase"}


class FakeFilter:
    def __init__(self, had: frozenset[str] | None) -> None:
        self.had = had
        self.asked: list[int] = []

    def refuses(self, profile: Profile, now_ms: int) -> frozenset[str] | None:
        self.asked.append(now_ms)
        return self.had


def rule(count: int = 2, within: int = 100, per: str | None = None,
         unless: Any = UNLESS, cooldown: int | None = None, user: Any = None,
         limits: Limits | None = None) -> Any:
    scene = RepeatScene("r", WHEN, count, within, per, unless, cooldown, user)
    return KIND.rule(scene, limits or Limits(late_ms=1_000))


def window(state: UserState, key: str = NO_KEY) -> KeyWindow:
    return state.windows["r"][key]


def test_a_scene_built_with_its_defaults_and_frozen() -> None:
    scene = RepeatScene("r", WHEN, 2, 100)
    assert (scene.per, scene.unless, scene.cooldown_ms, scene.user, scene.kind) == (
        None, None, None, None, "repeat")
    state = UserState()
    plain = KIND.rule(scene, Limits())
    # No unless, no cooldown: a purchase is nothing, every 2nd view on fires.
    assert [plain.apply(state, f, ts) for f, ts in ((VIEW, 1), (BUY, 2), (VIEW, 3),
                                                   (VIEW, 3))] == [False, False, None, None]
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.count = 3  # type: ignore[misc]
    with pytest.raises(TypeError):  # a scene's kind is its class's
        RepeatScene("r", WHEN, 2, 100, kind="arrival")  # type: ignore[call-arg]
    with pytest.raises(AttributeError):  # slots: no attribute the scene does not declare
        scene.__dict__  # noqa: B018


def test_the_kind_describes_itself() -> None:
    scene = RepeatScene("r", WHEN, 3, 1_800_000, "product_id", UNLESS, 86_400_000)
    assert (KIND.name, KIND.timer, KIND.slot, KIND.reads_profile) == (
        "repeat", False, "windows", False)
    assert KIND.predicates(scene) == (WHEN, UNLESS)
    shape = KIND.shape(scene)
    assert (shape.kind, shape.per, shape.when, shape.unless) == (
        "repeat", "product_id", canon(WHEN), canon(UNLESS))
    assert KIND.describe(scene) == "repeat  3x within 30m per product_id unless ..., cooldown 1d"
    assert KIND.describe(RepeatScene("r", WHEN, 2, 100)) == "repeat  2x within 100ms"
    made = rule()
    assert (made.timer, made.name, made.user) == (False, "r", None)


def test_the_callers_answers_replace_the_predicates() -> None:
    state = UserState()
    r = rule(count=1)
    assert r.apply(state, BUY, 1, when_holds=True, unless_holds=False) is None
    assert r.apply(state, VIEW, 2, when_holds=False, unless_holds=False) is False
    assert r.apply(state, VIEW, 3, when_holds=True, unless_holds=True) is False  # blocks itself
    assert window(state).unless == [3]
    other = UserState()
    assert r.apply(other, VIEW, 5) is None  # asked itself: a view, no purchase
    assert r.apply(other, BUY, 6) is False and window(other).unless == [6]


def test_per_values_of_any_type_and_a_missing_one() -> None:
    state = UserState()
    r = rule(count=1, per="sku")
    assert r.apply(state, {**VIEW, "sku": 7}, 1) == "7"
    assert r.apply(state, {**VIEW, "sku": "a"}, 2) == "a"
    assert r.apply(state, {**VIEW, "sku": ""}, 3) == ""
    assert sorted(state.windows["r"]) == ["", "7", "a"]
    before = {k: (w.when, w.last_fire) for k, w in state.windows["r"].items()}
    assert r.apply(state, VIEW, 4) is False  # no sku: ignored, no window
    assert {k: (w.when, w.last_fire) for k, w in state.windows["r"].items()} == before


def test_a_late_event_counts_only_what_is_not_newer() -> None:
    state = UserState()
    r = rule(count=2)
    assert r.apply(state, VIEW, 50) is False
    assert r.apply(state, VIEW, 10) is False  # 50 is newer: one view in (-90, 10]
    assert window(state).when == [10, 50]


def test_a_late_fire_keeps_the_newest_fire_time() -> None:
    state = UserState()
    r = rule(count=2)
    for ts in (10, 50):
        r.apply(state, VIEW, ts)
    assert window(state).last_fire == 50
    assert r.apply(state, VIEW, 30) is None  # 10 and 30 are in (−70, 30]
    assert window(state).when == [10, 30, 50] and window(state).last_fire == 50


def test_the_entry_cap_is_at_least_the_count() -> None:
    state = UserState()
    r = rule(count=3, unless=None, limits=Limits(late_ms=1_000, max_window_entries=2))
    assert [r.apply(state, VIEW, ts) for ts in (1, 2, 3, 4)] == [False, False, None, None]
    assert window(state).when == [2, 3, 4]  # capped at 3, oldest dropped
    r.apply(state, VIEW, 0)  # a late one at the cap drops the oldest again
    assert window(state).when == [2, 3, 4]
    many = rule(count=1, unless=None, limits=Limits(late_ms=1_000, max_window_entries=4))
    big = UserState()
    for ts in (1, 2, 3, 4, 5):
        many.apply(big, VIEW, ts)
    assert window(big).when == [2, 3, 4, 5]


def test_an_unless_in_the_window_blocks_up_to_its_edge() -> None:
    state = UserState()
    r = rule(count=1, within=100)
    r.apply(state, BUY, 100)
    assert r.apply(state, VIEW, 150) is False  # 100 in (50, 150]
    assert r.apply(state, VIEW, 200) is None  # 100 is not in (100, 200]
    late = UserState()
    r.apply(late, BUY, 100)
    assert r.apply(late, VIEW, 99) is None  # a purchase after the view does not block it
    # The latest purchase at or before the view decides, not an older one.
    two = UserState()
    r.apply(two, BUY, 50)
    r.apply(two, BUY, 150)
    assert r.apply(two, VIEW, 160) is False  # 150 in (60, 160]; 50 is not
    assert r.apply(two, VIEW, 250) is None  # 150 is not in (150, 250]


def test_the_cooldown_is_measured_from_the_last_fire() -> None:
    state = UserState()
    r = rule(count=1, cooldown=50)
    assert [r.apply(state, VIEW, ts) for ts in (0, 49, 50, 99, 100)] == [
        None, False, None, False, None]
    assert window(state).last_fire == 100


def test_a_refused_user_does_not_start_the_cooldown() -> None:
    state = UserState()
    refusing = FakeFilter(frozenset({"segment:new"}))
    r = rule(count=1, per="sku", cooldown=50, user=refusing)
    got = r.apply(state, {**VIEW, "sku": "a"}, 10)
    assert isinstance(got, Refused) and (got.key, got.had) == ("a", frozenset({"segment:new"}))
    assert window(state, "a").last_fire is None and refusing.asked == [10]
    plain = rule(count=1, user=FakeFilter(frozenset({"x"})))
    refused = plain.apply(UserState(), VIEW, 10)
    assert isinstance(refused, Refused) and refused.key is None
    passing = FakeFilter(None)
    ok = rule(count=1, cooldown=50, user=passing)
    fresh = UserState()
    assert ok.apply(fresh, VIEW, 10) is None and window(fresh).last_fire == 10


@pytest.mark.parametrize(("first", "kept"), [(8_899, []), (8_900, []), (8_901, [8_901])])
def test_a_window_is_pruned_at_its_horizon(first: int, kept: list[int]) -> None:
    # newest 10_000, within 100, late 1_000: horizon 8_900 (entries <= it go)
    for slot in ("when", "unless"):
        state = UserState()
        state.max_ts = 10_000
        win = KeyWindow()
        setattr(win, slot, [first])
        state.windows["r"] = {NO_KEY: win}
        rule(count=5).apply(state, VIEW, 10_000)
        assert getattr(window(state), slot) == kept + ([10_000] if slot == "when" else [])


@pytest.mark.parametrize(("last", "kept"), [(8_949, None), (8_950, None), (8_951, 8_951)])
def test_an_old_fire_is_forgotten_after_late_plus_cooldown(last: int, kept: int | None) -> None:
    # newest 10_000, late 1_000, cooldown 50: a fire at <= 8_950 can block nothing
    state = UserState()
    state.max_ts = 10_000
    win = KeyWindow()
    win.last_fire = last
    state.windows["r"] = {NO_KEY: win}
    rule(count=5, cooldown=50).apply(state, VIEW, 10_000)
    assert window(state).last_fire == kept


def test_nothing_is_pruned_before_a_newest_time_is_known() -> None:
    state = UserState()
    win = KeyWindow()
    win.when, win.unless, win.last_fire = [-10_000], [-10_000], -10_000
    state.windows["r"] = {NO_KEY: win}
    rule(count=5).apply(state, VIEW, 0)
    assert (window(state).when, window(state).unless, window(state).last_fire) == (
        [-10_000, 0], [-10_000], -10_000)


def test_a_new_key_at_the_key_cap_evicts_and_below_it_does_not() -> None:
    limits = Limits(late_ms=1_000, max_keys=2)
    state = UserState()
    r = rule(count=5, per="sku", limits=limits)
    r.apply(state, {**VIEW, "sku": "a"}, 1)
    r.apply(state, {**VIEW, "sku": "b"}, 2)
    assert sorted(state.windows["r"]) == ["a", "b"]
    r.apply(state, {**VIEW, "sku": "c"}, 3)  # at the cap: the least recent goes
    assert sorted(state.windows["r"]) == ["b", "c"]


T10 = 1_569_924_000_000  # 2019-10-01 10:00:00 UTC
MIN = 60_000
KEYED = RepeatScene("r", WHEN, 3, 30 * MIN, "product_id", UNLESS)


def event(minute: float, etype: str = "view", **fields: Any) -> Event:
    ts = T10 + int(minute * MIN)
    return Event("u", ts, etype, {"user_id": "u", "ts": ts, "type": etype, **fields})


def missing(events: list[Event], scene: RepeatScene = KEYED) -> str | None:
    return KIND.explain(scene, events, [], None, {}).missing


def test_explain_skips_events_without_the_per_field() -> None:
    assert missing([event(0), event(1, product_id="p"), event(2, product_id="p")]) == (
        "2 of 3 views of product_id p within 30m")


def test_explain_counts_only_the_window() -> None:
    got = missing([event(0, product_id="p"), event(40, product_id="p"),
                   event(41, product_id="p")])
    assert got == "2 of 3 views of product_id p within 30m"


def test_explain_names_the_latest_blocker_in_the_window() -> None:
    views = [event(21, product_id="p"), event(22, product_id="p"), event(23, product_id="p")]
    got = missing([event(-60, "purchase", product_id="p"), event(20, "purchase", product_id="p"),
                   *views])
    assert got == "3 of 3 views of product_id p within 30m; a purchase at 10:20 blocks it"
    # a purchase exactly at the window's open lower edge does not block
    edge = missing([event(0, "purchase", product_id="p"), event(10, product_id="p"),
                    event(20, product_id="p"), event(30, product_id="p")])
    assert edge == ("3 of 3 views of product_id p within 30m; the window's entries were "
                    "pruned (engine limits)")


def test_why_without_unless_names_no_blocker() -> None:
    plain = RepeatScene("r", WHEN, 3, 30 * MIN)
    assert KIND.why(plain, Trigger("r", "u", None, T10), None) == "3 of 3 views within 30m"
    assert KIND.why(KEYED, Trigger("r", "u", "p", T10), None) == (
        "3 of 3 views of product_id p within 30m, no purchase")


def test_explain_with_nothing_to_count() -> None:
    assert missing([event(0, "purchase", product_id="p")]) == "no views with product_id"
    assert missing([event(0, "purchase")], RepeatScene("r", WHEN, 3, 30 * MIN)) == "no views"
    assert missing([event(0)]) == "no views with product_id"  # a view without the field


def test_explain_of_equal_windows_names_the_latest_one() -> None:
    got = missing([event(0, product_id="p"), event(0, product_id="q")])
    assert got == "1 of 3 views of product_id q within 30m"
