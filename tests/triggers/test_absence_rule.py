"""The `absence` rule and its explanation alone (triggers/kinds/absence.py;
SEMANTICS.md "Kinds"): what `apply` returns for the caller's answers, and
each story `explain` tells of a timer (pending, re-armed, cancelled,
consumed, refused by the user filter). Expected texts are written out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from triggers.events import Event, Trigger
from triggers.kinds.absence import KIND, AbsenceScene
from triggers.kinds.base import Limits, canon
from triggers.predicates import parse_predicate
from triggers.state import UserState

START = parse_predicate({"type": "cart"})
CANCEL = parse_predicate({"type": "purchase"})
T10 = 1_569_924_000_000  # 2019-10-01 10:00:00 UTC
MIN = 60_000
SCENE = AbsenceScene("cart_abandonment", START, 30 * MIN, CANCEL)


def ev(ts: int, etype: str) -> Event:
    return Event("u", ts, etype, {"user_id": "u", "ts": ts, "type": etype})


def fire(deadline: int) -> Trigger:
    return Trigger("cart_abandonment", "u", None, deadline)


def explain(events: list[Event], fires: list[Trigger], clock: int | None,
            scene: AbsenceScene = SCENE, said: Any = None) -> Any:
    return KIND.explain(scene, events, fires, clock, said or {})


def test_a_scene_built_with_its_defaults_and_frozen() -> None:
    scene = AbsenceScene("a", START, 100)
    assert (scene.cancel, scene.user, scene.kind) == (None, None, "absence")
    rule = KIND.rule(scene, Limits())
    assert rule.apply(UserState(), {"type": "purchase"}, 5, None, None) is False
    assert rule.apply(UserState(), {"type": "cart"}, 5, None, None) == 105
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.after_ms = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        AbsenceScene("a", START, 100, kind="repeat")  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        scene.__dict__  # noqa: B018


def test_apply_for_the_callers_answers_and_its_own() -> None:
    rule = KIND.rule(SCENE, Limits())
    state = UserState()
    assert rule.apply(state, {"type": "cart"}, 10, None, None) == 10 + 30 * MIN
    assert rule.apply(state, {"type": "purchase"}, 10, None, None) is None  # disarms
    assert rule.apply(state, {"type": "view"}, 10, None, None) is False
    assert rule.apply(state, {"type": "view"}, 10, True, False) == 10 + 30 * MIN
    assert rule.apply(state, {"type": "cart"}, 10, False, None) is False
    assert rule.apply(state, {"type": "cart"}, 10, True, True) is None  # cancel wins
    assert rule.apply(state, {"type": "view"}, 10, None, True) is None
    assert rule.apply(state, {"type": "cart"}, 10, None, False) == 10 + 30 * MIN
    rule.prune(state)  # a timer is never pruned by age
    assert (rule.name, rule.timer, rule.user) == ("cart_abandonment", True, None)


def test_the_kind_describes_itself() -> None:
    assert (KIND.name, KIND.timer, KIND.slot, KIND.reads_profile) == (
        "absence", True, "timer", False)
    assert KIND.predicates(SCENE) == (START, CANCEL)
    shape = KIND.shape(SCENE)
    assert (shape.kind, shape.start, shape.per, shape.when) == ("absence", canon(START),
                                                                None, None)
    assert KIND.describe(SCENE) == "absence after 30m unless cancelled"
    assert KIND.describe(AbsenceScene("a", START, 100)) == "absence after 100ms"
    assert KIND.why(SCENE, fire(T10 + 30 * MIN), None) == \
        "cart at 10:00, no purchase within 30m"


def test_nothing_started() -> None:
    out = explain([ev(T10, "view")], [], T10)
    assert (out.scene, out.kind, out.fired, out.refused, out.missing) == (
        "cart_abandonment", "absence", (), (), "no carts")


def test_pending_with_and_without_a_clock() -> None:
    events = [ev(T10, "cart")]
    assert explain(events, [], T10 + 30 * MIN).missing == (
        "timer armed by the cart at 10:00 is pending until 10:30 (clock 10:30)")
    assert explain(events, [], None).missing == (
        "timer armed by the cart at 10:00 is pending until 10:30")


def test_re_armed_then_pending() -> None:
    events = [ev(T10, "cart"), ev(T10 + 10 * MIN, "cart")]
    out = explain(events, [], None)
    assert out.missing == "timer armed by the cart at 10:10 is pending until 10:40"
    # the re-arm story stays when nothing settles after it
    late = explain([ev(T10, "cart"), ev(T10 + 10 * MIN, "cart"), ev(T10 + 11 * MIN, "view")],
                   [], None)
    assert late.missing == "timer armed by the cart at 10:10 is pending until 10:40"


def test_re_armed_story_before_a_cancel() -> None:
    events = [ev(T10, "cart"), ev(T10 + 10 * MIN, "cart"), ev(T10 + 12 * MIN, "purchase")]
    assert explain(events, [], None).missing == (
        "the cart at 10:10 was cancelled by a purchase at 10:12")
    # a purchase with nothing armed tells no story
    assert explain([ev(T10, "purchase")], [], None).missing == "no carts"


def test_a_timer_past_its_deadline_without_a_fire_was_consumed() -> None:
    events = [ev(T10, "cart"), ev(T10 + 31 * MIN, "view")]
    out = explain(events, [], T10 + 31 * MIN)
    assert [(r.ts, r.key, r.why) for r in out.refused] == [
        (T10 + 30 * MIN, None, "the timer was consumed")]
    assert out.missing == "timer of the cart at 10:00: the timer was consumed"
    # the deadline exactly at the next event has not passed yet
    edge = explain([ev(T10, "cart"), ev(T10 + 30 * MIN, "view")], [], None)
    assert edge.refused == () and edge.missing.startswith("timer armed")
    # at the end, a clock past the deadline
    end = explain([ev(T10, "cart")], [], T10 + 30 * MIN + 1)
    assert end.missing == "timer of the cart at 10:00: the timer was consumed"


def test_a_user_filter_refusal_and_the_engines_words() -> None:
    scene = dataclasses.replace(SCENE, user=object())  # type: ignore[arg-type]
    events = [ev(T10, "cart"), ev(T10 + 40 * MIN, "view")]
    out = explain(events, [], None, scene)
    assert out.missing == "timer of the cart at 10:00: the scene's user filter refused this user"
    said = {("cart_abandonment", T10 + 30 * MIN): "had tags segment:new"}
    told = explain(events, [], None, scene, said)
    assert told.refused[0].why == "had tags segment:new"


def test_a_fired_timer_is_no_refusal_and_the_next_one_is_told() -> None:
    events = [ev(T10, "cart"), ev(T10 + 40 * MIN, "cart")]
    out = explain(events, [fire(T10 + 30 * MIN)], None)
    assert [f.why for f in out.fired] == ["cart at 10:00, no purchase within 30m"]
    assert out.refused == () and out.missing is None
