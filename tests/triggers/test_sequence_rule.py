"""The `sequence` rule and its explanation alone (triggers/kinds/sequence.py;
docs/semantics-notes.md "The sequence kind"): the caller's answers, the
window ``(then - within, then)`` for the latest first, ``unless`` in
``[first, then]``, the user filter, and each story `explain` tells. Expected
texts are written out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from triggers.events import Event, Trigger
from triggers.kinds.base import Limits, canon
from triggers.kinds.sequence import KIND, SequenceScene
from triggers.predicates import parse_predicate
from triggers.profile import Profile
from triggers.state import UserState
from triggers.userfilter import Refused

FIRST = parse_predicate({"type": "search"})
THEN = parse_predicate({"type": "view"})
UNLESS = parse_predicate({"type": "cart"})
T10 = 1_569_924_000_000  # 2019-10-01 10:00:00 UTC
MIN = 60_000
SCENE = SequenceScene("sv", FIRST, THEN, 10 * MIN, None, UNLESS)


class FakeFilter:
    def __init__(self, had: frozenset[str] | None) -> None:
        self.had = had

    def refuses(self, profile: Profile, now_ms: int) -> frozenset[str] | None:
        return self.had


def rule(per: str | None = None, cooldown: int | None = None, user: Any = None,
         limits: Limits | None = None) -> Any:
    scene = SequenceScene("sv", FIRST, THEN, 100, per, UNLESS, cooldown, user)
    return KIND.rule(scene, limits or Limits(late_ms=1_000))


def f(etype: str, **fields: Any) -> dict[str, Any]:
    return {"type": etype, **fields}


def ev(ts: int, etype: str, **fields: Any) -> Event:
    return Event("u", ts, etype, {"user_id": "u", "ts": ts, "type": etype, **fields})


def test_a_scene_built_with_its_defaults_and_frozen() -> None:
    scene = SequenceScene("sv", FIRST, THEN, 100)
    assert (scene.per, scene.unless, scene.cooldown_ms, scene.user, scene.kind) == (
        None, None, None, None, "sequence")
    r = KIND.rule(scene, Limits())
    state = UserState()
    assert [r.apply(state, f(t), ts, None, None) for t, ts in (
        ("search", 1), ("cart", 2), ("view", 3), ("view", 3))] == [False, False, None, None]
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.within_ms = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        SequenceScene("sv", FIRST, THEN, 100, kind="repeat")  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        scene.__dict__  # noqa: B018


def test_the_kind_describes_itself() -> None:
    scene = SequenceScene("sv", FIRST, THEN, 600_000, "category", UNLESS, 3_600_000)
    assert (KIND.name, KIND.timer, KIND.slot, KIND.reads_profile) == (
        "sequence", False, "windows", False)
    assert KIND.predicates(scene) == (FIRST, UNLESS, THEN)
    shape = KIND.shape(scene)
    assert (shape.kind, shape.per, shape.when, shape.unless) == (
        "sequence", "category", canon(FIRST), canon(UNLESS))
    assert KIND.describe(scene) == (
        "sequence first ... then ... within 10m per category unless ..., cooldown 1h")
    made = rule()
    assert (made.timer, made.name, made.user) == (False, "sv", None)


def test_the_callers_answers_and_its_own() -> None:
    state = UserState()
    r = rule()
    assert r.apply(state, f("view"), 10, True, False) is False  # a first, no earlier first
    assert r.apply(state, f("view"), 20, None, None) is None  # 10 is in (-80, 20)
    assert r.apply(state, f("other"), 30, True, None) is False
    assert state.windows["sv"][""].when == [10, 30]
    assert r.apply(state, f("view"), 40, False, True) is False  # blocks itself
    assert state.windows["sv"][""].unless == [40]
    assert r.apply(state, f("other"), 50, False, False) is False
    assert r.apply(state, f("cart"), 60, None, None) is False
    assert state.windows["sv"][""].unless == [40, 60]
    assert r.apply(state, f("cart"), 70, None, False) is False
    assert state.windows["sv"][""].unless == [40, 60]


def test_the_window_bounds_of_the_latest_first() -> None:
    r = rule()
    for first, then, fires in ((0, 100, False), (1, 100, None), (99, 100, None),
                               (100, 100, False)):
        state = UserState()
        r.apply(state, f("search"), first, None, None)
        assert r.apply(state, f("view"), then, None, None) is fires, (first, then)


def test_an_unless_from_the_first_to_the_then_blocks() -> None:
    r = rule()
    for cart, fires in ((9, None), (10, False), (15, False), (20, False), (21, None)):
        state = UserState()
        r.apply(state, f("search"), 10, None, None)
        r.apply(state, f("cart"), cart, None, None)
        assert r.apply(state, f("view"), 20, None, None) is fires, cart


def test_per_key_cooldown_and_the_newest_fire() -> None:
    state = UserState()
    r = rule(per="c", cooldown=50)
    assert r.apply(state, f("view", c="a"), 5, None, None) is False
    assert r.apply(state, f("search"), 6, None, None) is False  # no key: ignored
    assert "" not in state.windows.get("sv", {})
    r.apply(state, f("search", c=7), 10, None, None)
    assert r.apply(state, f("view", c="7"), 20, None, None) == "7"
    assert r.apply(state, f("view", c="7"), 69, None, None) is False
    assert r.apply(state, f("view", c="7"), 70, None, None) == "7"
    assert state.windows["sv"]["7"].last_fire == 70
    assert r.apply(state, f("view", c="7"), 60, None, None) is False  # late: 60 - 70 < 50
    late = rule(per="c")
    other = UserState()
    late.apply(other, f("search", c="k"), 10, None, None)
    late.apply(other, f("view", c="k"), 50, None, None)
    assert late.apply(other, f("view", c="k"), 30, None, None) == "k"
    assert other.windows["sv"]["k"].last_fire == 50


def test_a_refused_user_does_not_start_the_cooldown() -> None:
    state = UserState()
    r = rule(per="c", cooldown=50, user=FakeFilter(frozenset({"x"})))
    r.apply(state, f("search", c="a"), 10, None, None)
    got = r.apply(state, f("view", c="a"), 20, None, None)
    assert isinstance(got, Refused) and (got.key, got.had) == ("a", frozenset({"x"}))
    assert state.windows["sv"]["a"].last_fire is None
    plain = rule(user=FakeFilter(frozenset({"x"})))
    s2 = UserState()
    plain.apply(s2, f("search"), 10, None, None)
    refused = plain.apply(s2, f("view"), 20, None, None)
    assert isinstance(refused, Refused) and refused.key is None
    ok = rule(user=FakeFilter(None))
    s3 = UserState()
    ok.apply(s3, f("search"), 10, None, None)
    assert ok.apply(s3, f("view"), 20, None, None) is None


def test_the_first_times_are_capped() -> None:
    r = rule(limits=Limits(late_ms=1_000, max_window_entries=2))
    state = UserState()
    for ts in (1, 2, 3):
        r.apply(state, f("search"), ts, None, None)
    assert state.windows["sv"][""].when == [2, 3]


def test_why_reads_the_start_from_the_state() -> None:
    trigger = Trigger("sv", "u", None, T10 + 5 * MIN)
    assert KIND.why(SCENE, trigger, None) == "search then view within 10m"
    state = UserState()
    assert KIND.why(SCENE, trigger, state) == "search then view within 10m"
    r = KIND.rule(SCENE, Limits())
    r.apply(state, f("search"), T10, None, None)
    r.apply(state, f("search"), T10 + 2 * MIN, None, None)
    r.apply(state, f("search"), T10 + 5 * MIN, None, None)  # not before the fire
    assert KIND.why(SCENE, trigger, state) == "search at 10:02, then view within 10m"
    early = Trigger("sv", "u", None, T10)
    assert KIND.why(SCENE, early, state) == "search then view within 10m"
    keyed = dataclasses.replace(SCENE, per="c")
    kstate = UserState()
    KIND.rule(keyed, Limits()).apply(kstate, f("search", c="a"), T10, None, None)
    assert KIND.why(keyed, Trigger("sv", "u", "a", T10 + MIN), kstate) == (
        "search at 10:00, then view within 10m")


def explain(events: list[Event], fires: list[Trigger], scene: SequenceScene = SCENE,
            said: Any = None) -> Any:
    return KIND.explain(scene, events, fires, None, said or {})


def test_the_stories() -> None:
    assert explain([ev(T10, "view")], []).missing == "no searches"
    assert explain([ev(T10, "search")], []).missing == (
        "a search at 10:00, no view within 10m after it")
    blocked = explain([ev(T10, "search"), ev(T10 + MIN, "cart"), ev(T10 + 2 * MIN, "view")], [])
    assert blocked.missing == "a cart at 10:01 blocks it"
    pruned = explain([ev(T10, "search"), ev(T10 + 2 * MIN, "view")], [])
    assert pruned.missing == (
        "search at 10:00 then view at 10:02: the window's entries were pruned (engine limits)")
    told = explain([ev(T10, "search"), ev(T10 + 2 * MIN, "view")], [],
                   said={("sv", T10 + 2 * MIN): "had tags x"})
    assert told.missing == "search at 10:00 then view at 10:02: had tags x"
    # the window's lower bound is open: a search exactly 10m before is out
    out = explain([ev(T10, "search"), ev(T10 + 10 * MIN, "view")], [])
    assert out.missing == "a search at 10:00, no view within 10m after it"
    # a cart before the search does not block; at the view's own time it does
    before = explain([ev(T10, "cart"), ev(T10 + MIN, "search"), ev(T10 + 2 * MIN, "view")], [])
    assert before.missing.startswith("search at 10:01 then view at 10:02")
    at_then = explain([ev(T10, "search"), ev(T10 + 2 * MIN, "cart"),
                       ev(T10 + 2 * MIN, "view")], [])
    assert at_then.missing == "a cart at 10:02 blocks it"


def test_fired_whys_and_per_keys() -> None:
    events = [ev(T10, "search", c="a"), ev(T10 + MIN, "search", c="b"),
              ev(T10 + 3 * MIN, "view", c="a"), ev(T10 + 4 * MIN, "view")]
    keyed = dataclasses.replace(SCENE, per="c")
    fires = [Trigger("sv", "u", "a", T10 + 3 * MIN), Trigger("sv", "u", "z", T10 + 9 * MIN)]
    out = explain(events, fires, keyed)
    assert (out.scene, out.kind, out.refused, out.missing) == ("sv", "sequence", (), None)
    assert [x.why for x in out.fired] == ["search at 10:00, then view within 10m",
                                          "search then view within 10m"]
    blocked_b = explain([ev(T10, "search", c="a"), ev(T10 + MIN, "cart", c="b"),
                         ev(T10 + 2 * MIN, "view", c="a")], [], keyed)
    assert blocked_b.missing.startswith("search at 10:00 then view at 10:02")


def test_explain_follows_the_rule_at_its_edges() -> None:
    keyed = dataclasses.replace(SCENE, per="c")
    skipped = explain([ev(T10, "cart"), ev(T10 + MIN, "search", c="a")], [], keyed)
    assert skipped.missing == "a search at 10:01, no view within 10m after it"
    # a first in the same millisecond as the then is no sequence (the rule's
    # "strictly before"); explain used to call it one the engine had pruned
    same_ms = explain([ev(T10, "search"), ev(T10, "view")], [])
    assert same_ms.missing == "a search at 10:00, no view within 10m after it"
    # an unless at the first's own time blocks (the rule's [first, then])
    blocked = explain([ev(T10, "search"), ev(T10, "cart"), ev(T10 + MIN, "view")], [])
    assert blocked.missing == "a cart at 10:00 blocks it"
