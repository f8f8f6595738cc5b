"""Scene `user:` filters: checked when the scene would fire, on the profile
including the current event (absence: at the deadline); a filtered-out fire
starts no cooldown; an absence timer is consumed either way."""

from __future__ import annotations

from typing import Any

import pytest

import triggers.userfilter as userfilter
from config.loader import validate_config
from tests.triggers.helpers import engine, ev, feed, pending, run
from triggers import Engine, classify
from triggers.events import event_from_mapping
from triggers.state import BytesStore

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_569_931_200_000  # Tuesday 2019-10-01 12:00 UTC: afternoon, weekday
LOYAL = {"segment": {"in": ["loyal", "champion"]}}

REPEAT = {"kind": "repeat", "when": {"type": "view"}, "per": "product_id", "count": 3,
          "within": "30m", "unless": {"type": "purchase"}, "cooldown": "24h"}
CART = {"kind": "absence", "start": {"type": "cart"}, "cancel": {"type": "purchase"},
        "after": "30m"}
PROMO = {"kind": "arrival", "when": {"page": {"prefix": "/promo"}}, "per": "page",
         "cooldown": "1h"}


def view(ts: int, product: str = "p1", user: str = "u") -> dict[str, Any]:
    return ev(user, ts, "view", product_id=product)


def buy(ts: int, product: str = "p9", price: str = "50.00", user: str = "u") -> dict[str, Any]:
    return ev(user, ts, "purchase", product_id=product, price=price)


def flat(batches: list[list[Any]]) -> list[Any]:
    return [t for batch in batches for t in batch]


# -- repeat ---------------------------------------------------------------------


def test_repeat_suppressed_fire_starts_no_cooldown() -> None:
    # Three views of p1 qualify, but the user has not bought yet (new_or_lapsed).
    # Two purchases of another product (unless is per product) make them loyal;
    # the next view of p1 fires: the suppressed fire started no 24h cooldown.
    events = [view(T0), view(T0 + MIN), view(T0 + 2 * MIN),
              buy(T0 + 3 * MIN), buy(T0 + 4 * MIN), view(T0 + 5 * MIN)]
    plain = run({"r": REPEAT}, events)
    assert plain == [("r", "u", "p1", T0 + 2 * MIN)]  # then cooling down
    assert run({"r": {**REPEAT, "user": LOYAL}}, events) == [("r", "u", "p1", T0 + 5 * MIN)]


def test_repeat_admitted_fire_starts_the_cooldown_as_usual() -> None:
    events = [buy(T0 - 2 * MIN), buy(T0 - MIN), view(T0), view(T0 + MIN), view(T0 + 2 * MIN),
              view(T0 + 3 * MIN)]
    filtered = run({"r": {**REPEAT, "user": LOYAL}}, events)
    assert filtered == run({"r": REPEAT}, events) == [("r", "u", "p1", T0 + 2 * MIN)]


def test_repeat_window_still_counts_views_of_a_filtered_out_user() -> None:
    # Filtering decides the fire, not what is counted: the views taken while
    # the user failed stay in the window.
    events = [view(T0), view(T0 + MIN), buy(T0 + 2 * MIN), buy(T0 + 3 * MIN),
              view(T0 + 4 * MIN)]
    assert run({"r": {**REPEAT, "user": LOYAL}}, events) == [("r", "u", "p1", T0 + 4 * MIN)]


def test_repeat_style_filter_sees_searches() -> None:
    scene = {**REPEAT, "user": {"style": {"in": ["search_driven"]}}}
    browsing = [view(T0 + i * MIN) for i in range(3)]
    assert run({"r": scene}, browsing) == []
    searching = [ev("s", T0 + i * MIN, "search", query="phone") for i in range(2)]
    searching += [view(T0 + (3 + i) * MIN, user="s") for i in range(3)]
    assert run({"r": scene}, searching) == [("r", "s", "p1", T0 + 5 * MIN)]


def test_repeat_none_tag_excludes_night_owls() -> None:
    night = T0 - 10 * HOUR  # 02:00 UTC
    scene = {**REPEAT, "per": None, "cooldown": None, "user": {"tags": {"none": ["tod:night"]}}}
    scene = {k: v for k, v in scene.items() if v is not None}
    events = [view(night + i * MIN, product=f"p{i}") for i in range(6)]
    # 3rd and 4th view: fewer than min_events (5) events, no habit tag yet;
    # from the 5th the user is tagged tod:night and filtered out.
    assert run({"r": scene}, events) == [("r", "u", None, night + 2 * MIN),
                                         ("r", "u", None, night + 3 * MIN)]
    assert len(run({"r": {k: v for k, v in scene.items() if k != "user"}}, events)) == 4


# -- arrival --------------------------------------------------------------------


def test_arrival_filter_sees_the_current_event() -> None:
    # The second purchase itself makes the user loyal, and fires.
    scene = {"kind": "arrival", "when": {"type": "purchase"}, "user": LOYAL}
    assert run({"a": scene}, [buy(T0), buy(T0 + MIN)]) == [("a", "u", None, T0 + MIN)]


def test_arrival_suppressed_fire_starts_no_cooldown() -> None:
    events = [ev("u", T0, "page", page="/promo/x"), buy(T0 + MIN, price="250"),
              ev("u", T0 + 2 * MIN, "page", page="/promo/x"),
              ev("u", T0 + 3 * MIN, "page", page="/promo/x")]
    assert run({"a": PROMO}, events) == [("a", "u", "/promo/x", T0)]
    # loyal by amount (>= 200) from the purchase on; the cooldown runs from T0+2m
    assert run({"a": {**PROMO, "user": LOYAL}}, events) == [("a", "u", "/promo/x", T0 + 2 * MIN)]


def test_arrival_without_cooldown_filters_every_event() -> None:
    scene = {"kind": "arrival", "when": {"type": "view"},
             "user": {"tags": {"any": ["segment:promising", "segment:loyal"]}}}
    events = [view(T0), buy(T0 + MIN), view(T0 + 2 * MIN), view(T0 + 3 * MIN)]
    assert run({"a": scene}, events) == [("a", "u", None, T0 + 2 * MIN),
                                         ("a", "u", None, T0 + 3 * MIN)]


# -- absence --------------------------------------------------------------------


def test_absence_checked_at_the_deadline_and_the_timer_is_consumed() -> None:
    # Loyal when the cart arms the timer; at the deadline the last purchase is
    # older than lapse_after (90d), so the user is new_or_lapsed: no trigger,
    # and the timer is gone (not pending, never fires later).
    last_buy = T0 - 90 * DAY + 10 * MIN
    eng = engine({"c": {**CART, "user": LOYAL}})
    batches = feed(eng, [buy(last_buy - MIN), buy(last_buy), ev("u", T0, "cart")])
    assert pending(eng) == [("c", "u", T0 + 30 * MIN)]
    batches += feed(eng, [view(T0 + 31 * MIN, user="x")])
    assert flat(batches) == [] and pending(eng) == []
    state = eng.store.get("u")
    assert state is not None and state.timer == {}
    assert eng.rebuild_timers() == 0  # a restart does not revive it either
    assert eng.advance(T0 + 10 * DAY) == []
    # unfiltered, the same input fires at the deadline
    plain = engine({"c": CART})
    fired = flat(feed(plain, [buy(last_buy - MIN), buy(last_buy), ev("u", T0, "cart"),
                              view(T0 + 31 * MIN, user="x")]))
    assert fired == [("c", "u", None, T0 + 30 * MIN)]


def test_absence_classified_at_the_deadline_not_at_the_clock() -> None:
    # At the deadline the last purchase is 1 minute short of lapsing; the
    # clock passes the deadline only 2 hours later, when it has lapsed.
    deadline = T0 + 30 * MIN
    last_buy = deadline - 90 * DAY + MIN
    events = [buy(last_buy - MIN), buy(last_buy), ev("u", T0, "cart"),
              view(T0 + 2 * HOUR, user="x")]
    assert run({"c": {**CART, "user": LOYAL}}, events) == [("c", "u", None, deadline)]


def test_absence_admitted_when_the_user_passes_at_the_deadline() -> None:
    # u bought twice before the cart (loyal), v never bought (new_or_lapsed):
    # only u passes the loyal filter, and neither is `promising`.
    eng = engine({"c": {**CART, "user": LOYAL}, "d": {**CART, "user": {"segment": "promising"}}})
    batches = feed(eng, [buy(T0 - 2 * MIN), buy(T0 - MIN), ev("u", T0, "cart"),
                         ev("v", T0, "cart"), view(T0 + 31 * MIN, user="x")])
    assert flat(batches) == [("c", "u", None, T0 + 30 * MIN)]
    assert pending(eng) == []


def test_absence_filter_uses_the_profile_at_the_deadline_not_at_arming() -> None:
    # Events between cart and deadline that do not cancel still change the
    # profile: seven night views after an evening cart make the user tod:night.
    evening = T0 + 11 * HOUR + 40 * MIN  # 23:40 UTC
    scene = {**CART, "user": {"tags": {"none": ["tod:night"]}}}
    base = [view(T0 + i * MIN, product=f"p{i}") for i in range(5)] + [ev("u", evening, "cart")]
    night = [view(evening + 20 * MIN + i * 1000) for i in range(7)]  # 00:00 UTC on
    done = [view(evening + 31 * MIN, user="x")]
    assert run({"c": scene}, base + done) == [("c", "u", None, evening + 30 * MIN)]
    assert run({"c": scene}, base + night + done) == []


def test_filtered_absence_on_encoded_state() -> None:
    # The worker's store encodes state: the filter sees the decoded profile.
    scenes = validate_config({"scenes": {"c": {**CART, "user": LOYAL}}}).scene_list()
    eng = Engine(scenes, store=BytesStore({}))
    out = []
    for raw in [buy(T0 - 2 * MIN), buy(T0 - MIN), ev("u", T0, "cart"), ev("w", T0, "cart"),
                view(T0 + 31 * MIN, user="x")]:
        out += eng.handle(event_from_mapping(raw))
    assert [(t.scene, t.user_id, t.ts) for t in out] == [("c", "u", T0 + 30 * MIN)]
    assert eng.pending_timers() == []


def test_reload_applies_the_new_filter_to_armed_timers() -> None:
    eng = engine({"c": CART})
    feed(eng, [ev("u", T0, "cart")])
    eng.reconfigure(validate_config({"scenes": {"c": {**CART, "user": LOYAL}}}).scene_list())
    assert eng.advance(T0 + 31 * MIN) == []
    assert pending(eng) == []


# -- cost and construction ------------------------------------------------------


def test_classification_runs_only_when_a_filtered_scene_would_fire(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = classify.value_segment

    def counting(*args: Any) -> str:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(userfilter, "value_segment", counting)
    scenes = {"plain": REPEAT, "r": {**REPEAT, "cooldown": "1ms", "user": LOYAL},
              "c": CART, "a": PROMO}
    # 10 views of p1: the filtered repeat would fire from the 3rd view on (8 times)
    events = [view(T0 + i * MIN) for i in range(10)] + [ev("u", T0, "cart"), view(T0 + HOUR)]
    run(scenes, events)
    assert len(calls) == 8
    calls.clear()
    run({"plain": REPEAT, "c": CART, "a": PROMO}, events)
    assert calls == []


def test_filters_need_profiles() -> None:
    scenes = validate_config({"scenes": {"c": {**CART, "user": LOYAL}}}).scene_list()
    with pytest.raises(ValueError, match="track_profile"):
        Engine(scenes, track_profile=False)
    Engine(validate_config({"scenes": {"c": CART}}).scene_list(), track_profile=False)


# -- refusals the engine reports --------------------------------------------------


def test_engine_reports_each_refusal_with_the_filter_and_what_the_profile_had() -> None:
    # Three views qualify while the user has not bought (new_or_lapsed): one
    # refusal; after two purchases the next view fires, and nothing more is refused.
    eng = engine({"r": {**REPEAT, "user": LOYAL}})
    fired = flat(feed(eng, [view(T0), view(T0 + MIN), view(T0 + 2 * MIN)]))
    assert fired == []
    refusals = eng.take_refusals()
    assert [(r.scene, r.user_id, r.key, r.ts) for r in refusals] == [("r", "u", "p1", T0 + 2 * MIN)]
    assert refusals[0].filter == "segments {champion,loyal}"
    assert refusals[0].had == ("segment:new_or_lapsed",)
    assert refusals[0].text() == ("user filter segments {champion,loyal}; "
                                  "the profile had segment:new_or_lapsed")
    assert eng.take_refusals() == []  # taken once
    fired = flat(feed(eng, [buy(T0 + 3 * MIN), buy(T0 + 4 * MIN), view(T0 + 5 * MIN)]))
    assert fired == [("r", "u", "p1", T0 + 5 * MIN)]
    assert eng.take_refusals() == []


def test_engine_reports_arrival_and_absence_refusals() -> None:
    eng = engine({"p": {**PROMO, "user": LOYAL}, "c": {**CART, "user": LOYAL}})
    feed(eng, [ev("u", T0, "view", page="/promo/a"), ev("u", T0 + MIN, "cart")])
    assert [(r.scene, r.key, r.ts) for r in eng.take_refusals()] == [("p", "/promo/a", T0)]
    assert eng.advance(T0 + 40 * MIN) == []
    (timer,) = eng.take_refusals()
    assert (timer.scene, timer.user_id, timer.key, timer.ts) == ("c", "u", None, T0 + 31 * MIN)
    assert timer.had == ("segment:new_or_lapsed",)


def test_refusals_an_unasked_engine_holds_are_bounded() -> None:
    import triggers.engine as engine_module
    eng = engine({"p": {"kind": "arrival", "when": {"type": "view"}, "user": LOYAL}})
    feed(eng, [view(T0 + i, user=f"u{i}") for i in range(engine_module.MAX_PENDING_REFUSALS + 5)])
    assert len(eng.take_refusals()) == engine_module.MAX_PENDING_REFUSALS
    assert eng.refusals_dropped == 5
