"""triggers.explain: what a scene needed and what was missing, from one
user's events and the engine's triggers (the engine itself runs them)."""

from __future__ import annotations

from typing import Any

from config.loader import load_config_text
from triggers.engine import Engine
from triggers.events import Event
from triggers.explain import explain_scene
from triggers.scenes import Scene

T10 = 1_569_924_000_000  # 2019-10-01 10:00:00 UTC
MIN = 60_000
HOUR = 60 * MIN


def _scenes(text: str) -> list[Scene]:
    return load_config_text(text).scene_list()


def _ev(ts: int, etype: str, **fields: Any) -> Event:
    return Event("u", ts, etype, {"user_id": "u", "ts": ts, "type": etype, **fields})


def _run(scenes: list[Scene], events: list[Event], clock_to: int | None = None) -> Any:
    engine = Engine(scenes)
    fired = [t for e in events for t in engine.handle(e)]
    fired += engine.advance(clock_to if clock_to is not None else engine.clock)
    return [explain_scene(s, events, fired, engine.clock) for s in scenes], fired


REPEAT = """
scenes:
  repeat_view_no_purchase: {kind: repeat, when: {type: view}, per: product_id, count: 3,
                            within: 30m, unless: {type: purchase}, cooldown: 24h}
"""


def test_a_repeat_scene_that_did_not_fire_says_what_was_missing() -> None:
    events = [_ev(T10 - 5 * MIN, "view", product_id="1002544"),
              _ev(T10 + 2 * MIN, "purchase", product_id="1002544"),
              _ev(T10 + 4 * MIN, "view", product_id="1002544"),
              _ev(T10 + 6 * MIN, "view", product_id="7")]
    (scene,), fired = _run(_scenes(REPEAT), events)
    assert fired == []
    assert scene.lines("u") == [
        "repeat_view_no_purchase for u: 2 of 3 views of product_id 1002544 within 30m; "
        "a purchase at 10:02 blocks it"]


def test_a_fired_repeat_names_its_figures_and_a_cooldown_refusal() -> None:
    events = [_ev(T10 + i * MIN, "view", product_id="p") for i in range(4)]
    (scene,), fired = _run(_scenes(REPEAT), events)
    assert [t.ts for t in fired] == [T10 + 2 * MIN]
    assert scene.fired[0].why == "3 of 3 views of product_id p within 30m, no purchase"
    assert [(r.ts, r.why) for r in scene.refused] == [
        (T10 + 3 * MIN, "3 of 3 views of product_id p within 30m; cooldown 1d since the "
                        "fire at 10:02")]
    assert scene.missing is None


def test_a_user_filter_refusal_is_named() -> None:
    scenes = _scenes(REPEAT.replace("cooldown: 24h}", "cooldown: 24h,\n"
                                    "                            user: {tags: {all: [segment:champion]}}}"))
    events = [_ev(T10 + i * MIN, "view", product_id="p") for i in range(3)]
    (scene,), fired = _run(scenes, events)
    assert fired == []
    assert scene.refused[0].why.endswith("the scene's user filter refused this user")
    assert scene.missing == ("3 of 3 views of product_id p within 30m; the scene's user "
                             "filter refused this user")


ABSENCE = """
scenes:
  cart_abandonment: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
"""


def test_absence_cancelled_pending_and_fired() -> None:
    scenes = _scenes(ABSENCE)
    cancelled = [_ev(T10, "cart"), _ev(T10 + 12 * MIN, "purchase")]
    (scene,), _ = _run(scenes, cancelled)
    assert scene.missing == "the cart at 10:00 was cancelled by a purchase at 10:12"
    (scene,), _ = _run(scenes, [_ev(T10, "cart"), _ev(T10 + 20 * MIN, "view")])
    assert scene.missing == ("timer armed by the cart at 10:00 is pending until 10:30 "
                             "(clock 10:20)")
    (scene,), fired = _run(scenes, [_ev(T10, "cart"), _ev(T10 + 40 * MIN, "view")])
    assert [t.ts for t in fired] == [T10 + 30 * MIN]
    assert scene.fired[0].why == "cart at 10:00, no purchase within 30m"


def test_arrival_without_a_match_and_in_cooldown() -> None:
    scenes = _scenes("""
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page, cooldown: 1h}
""")
    (scene,), _ = _run(scenes, [_ev(T10, "page", page="/home")])
    assert scene.missing == "no events (page^=/promo)"
    (scene,), fired = _run(scenes, [_ev(T10, "page", page="/promo/a"),
                                    _ev(T10 + MIN, "page", page="/promo/a")])
    assert len(fired) == 1
    assert [r.why for r in scene.refused] == ["cooldown 1h since the fire at 10:00"]


def test_sequence_fired_and_missing() -> None:
    scenes = _scenes("""
scenes:
  view_then_cart: {kind: sequence, first: {type: view}, then: {type: cart}, within: 10m}
""")
    (scene,), fired = _run(scenes, [_ev(T10, "view"), _ev(T10 + 2 * MIN, "cart")])
    assert len(fired) == 1 and scene.fired[0].why == "view at 10:00, then cart within 10m"
    (scene,), fired = _run(scenes, [_ev(T10, "view"), _ev(T10 + 20 * MIN, "cart")])
    assert fired == [] and scene.missing == "a view at 10:00, no cart within 10m after it"


def test_a_bot_lists_a_bounded_number_of_refusals() -> None:
    events = [_ev(T10 + i * 100, "view", product_id="p") for i in range(2_000)]
    (scene,), fired = _run(_scenes(REPEAT), events)
    assert len(fired) == 1  # the 24h cooldown holds the rest
    assert len(scene.refused) == 50
    assert scene.extra == {"refusals_not_listed": 2_000 - 3 - 50}


def test_fired_why_read_off_the_state_equals_what_explain_prints_from_events() -> None:
    # What the worker writes to the decision log (it has the state, not the
    # user's events) is the line explain prints for the same trigger.
    from triggers.explain import fired_why

    scenes = _scenes("""
scenes:
  view_then_cart: {kind: sequence, first: {type: view}, then: {type: cart}, within: 10m}
  cart_abandonment: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
""" + REPEAT.replace("scenes:\n", ""))
    events = [_ev(T10, "view", product_id="p"), _ev(T10 + MIN, "view", product_id="p"),
              _ev(T10 + 3 * MIN, "view", product_id="p"),
              _ev(T10 + 4 * MIN, "cart", product_id="p")]
    engine = Engine(scenes)
    whys = {}
    for event in events:
        for trig in engine.handle(event):
            whys[trig.scene] = fired_why(next(s for s in scenes if s.name == trig.scene), trig,
                                         engine.store.get("u"))
    for trig in engine.advance(T10 + HOUR):
        whys[trig.scene] = fired_why(next(s for s in scenes if s.name == trig.scene), trig)
    assert whys == {
        "view_then_cart": "view at 10:03, then cart within 10m",
        "repeat_view_no_purchase": "3 of 3 views of product_id p within 30m, no purchase",
        "cart_abandonment": "cart at 10:04, no purchase within 30m"}
    explained, _ = _run(scenes, events, T10 + HOUR)
    assert {s.scene: s.fired[0].why for s in explained} == whys


def test_event_types_are_named_as_english_names_them_or_as_they_are() -> None:
    """``searches``, not ``searchs``; OTTO's ``clicks`` is ``events (type=clicks)``,
    not ``clickss``; ``an order``, not ``a order``."""
    from triggers.kinds.explaining import plural_of

    assert {t: plural_of(t) for t in ("view", "cart", "purchase", "search", "box", "reply",
                                      "buy", "order", "clicks", "carts", "delivered",
                                      "add_to_cart", "Search", "v2", "")} == {
        "view": "views", "cart": "carts", "purchase": "purchases", "search": "searches",
        "box": "boxes", "reply": "replies", "buy": "buys", "order": "orders",
        "clicks": None, "carts": None, "delivered": None, "add_to_cart": None,
        "Search": None, "v2": None, "": None}
    scenes = _scenes("""
scenes:
  searched_thrice: {kind: repeat, when: {type: search}, count: 3, within: 30m,
                    unless: {type: order}}
  clicked_thrice: {kind: repeat, when: {type: clicks}, count: 3, within: 30m,
                   unless: {type: orders}}
  order_then_search: {kind: sequence, first: {type: order}, then: {type: search}, within: 10m}
""")
    (search, clicks, sequence), _ = _run(scenes, [_ev(T10, "view")])
    assert search.missing == "no searches"
    assert clicks.missing == "no events (type=clicks)"
    assert sequence.missing == "no orders"
    events = [_ev(T10, "search"), _ev(T10 + MIN, "order"), _ev(T10 + 2 * MIN, "search"),
              _ev(T10 + 3 * MIN, "clicks"), _ev(T10 + 4 * MIN, "orders"),
              _ev(T10 + 5 * MIN, "clicks")]
    (search, clicks, _), _ = _run(scenes, events)
    assert search.missing == "2 of 3 searches within 30m; an order at 10:01 blocks it"
    assert clicks.missing == ("2 of 3 events (type=clicks) within 30m; an event (type=orders) "
                              "at 10:04 blocks it")
    (_, _, sequence), _ = _run(scenes, [_ev(T10, "order"), _ev(T10 + 20 * MIN, "view")])
    assert sequence.missing == "an order at 10:00, no search within 10m after it"


def test_the_shared_words_of_a_story_each_kind_tells() -> None:
    """triggers.kinds.explaining, which every kind's explanation uses: the
    clock, the predicate as written, its noun and article."""
    from datetime import UTC, datetime

    from triggers.kinds.explaining import a_noun, clock, describe, hm, noun
    from triggers.predicates import parse_predicate

    ts = int(datetime(2019, 10, 1, 10, 3, 7, tzinfo=UTC).timestamp() * 1000)
    assert (clock(ts), hm(ts)) == ("2019-10-01 10:03:07", "10:03")
    # past any calendar: the milliseconds as they are, never an error
    assert (clock(10**20), hm(10**20)) == (f"{10**20}ms", f"{10**20}ms")
    assert describe(None) == describe(parse_predicate(None)) == "any event"
    both = parse_predicate({"type": {"in": ["view", "cart"]}, "page": {"prefix": "/promo"}})
    assert describe(both) == "type in {cart,view} and page^=/promo"
    assert noun(None) == "events (any event)" and a_noun(None) == "an event (any event)"
    assert noun(both) == "events (type in {cart,view} and page^=/promo)"
    # one condition that is not "type equals a word": in brackets
    assert noun(parse_predicate({"type": {"in": ["view"]}})) == "events (type in {view})"
    assert noun(parse_predicate({"type": {"prefix": "vi"}})) == "events (type^=vi)"
    assert noun(parse_predicate({"page": "home"}), False) == "event (page=home)"
    assert (noun(parse_predicate({"type": "view"})), a_noun(parse_predicate({"type": "order"}))) == (
        "views", "an order")


def test_the_plural_rule_at_each_ending() -> None:
    from triggers.kinds.explaining import plural_of

    assert {t: plural_of(t) for t in ("flash", "buzz", "y", "by", "day")} == {
        "flash": "flashes", "buzz": "buzzes",
        "y": "ys", "by": "bies",  # the shortest words the y rule reads
        "day": "days"}


def test_an_explanation_is_frozen_and_tells_its_lines() -> None:
    import dataclasses

    import pytest

    from triggers.events import Trigger
    from triggers.kinds.explaining import Fired, Refusal, SceneExplanation

    empty = SceneExplanation("s", "repeat")
    assert (empty.fired, empty.refused, empty.missing, empty.extra) == ((), (), None, {})
    assert empty.lines("u") == []
    out = SceneExplanation("s", "repeat", (Fired(Trigger("s", "u", "p1", T10), "3 views"),),
                           (Refusal(T10 + MIN, "p1", "cooldown"), Refusal(T10 + HOUR, None, "unless")),
                           "2 of 3 views")
    assert out.lines("u") == ["s fired at 2019-10-01 10:00:00: 3 views",
                              "s refused at 2019-10-01 10:01:00 (p1): cooldown",
                              "s refused at 2019-10-01 11:00:00: unless",
                              "s for u: 2 of 3 views"]
    for frozen, name in ((out, "missing"), (out.fired[0], "why"), (out.refused[0], "why")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(frozen, name, "x")


def test_a_fire_cools_its_own_key_from_its_time_for_the_cooldown() -> None:
    """cooling(): the fire of the same key at or before ts, less than the
    cooldown before it."""
    from dataclasses import dataclass

    from triggers.events import Trigger
    from triggers.kinds.explaining import cooling

    @dataclass
    class Scene:
        per: str | None = "product_id"
        cooldown_ms: int | None = HOUR

    fire = Trigger("s", "u", "p1", T10)
    assert cooling(Scene(), [fire], "p1", T10) == fire  # its own time
    assert cooling(Scene(), [fire], "p1", T10 + HOUR - 1) == fire
    assert cooling(Scene(), [fire], "p1", T10 + HOUR) is None  # the cooldown has run out
    assert cooling(Scene(), [fire], "p1", T10 - 1) is None  # before it
    assert cooling(Scene(), [fire], "p2", T10 + MIN) is None  # another key
    assert cooling(Scene(cooldown_ms=None), [fire], "p1", T10) is None
