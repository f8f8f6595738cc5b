"""`absence`: timers, the clock and every tie SEMANTICS.md names."""

from __future__ import annotations

from tests.triggers.helpers import engine, ev, feed, pending, run

CART = {"kind": "absence", "start": {"type": "cart"}, "cancel": {"type": "purchase"},
        "after": "30m"}
AFTER = 30 * 60_000


def test_fires_after_deadline_with_deadline_as_ts_and_null_key() -> None:
    eng = engine({"cart": CART})
    batches = feed(eng, [ev("u", 0, "cart"), ev("x", AFTER + 1)])
    assert batches == [[], [("cart", "u", None, AFTER)]]
    assert pending(eng) == []


def test_purchase_at_exactly_the_deadline_cancels() -> None:
    eng = engine({"cart": CART})
    assert feed(eng, [ev("u", 0, "cart"), ev("u", AFTER, "purchase"), ev("x", AFTER + 10)]) == [
        [], [], []]
    assert pending(eng) == []


def test_purchase_one_ms_after_the_deadline_is_too_late() -> None:
    eng = engine({"cart": CART})
    batches = feed(eng, [ev("u", 0, "cart"), ev("u", AFTER + 1, "purchase")])
    assert batches == [[], [("cart", "u", None, AFTER)]]


def test_deadline_equal_to_next_event_ts_does_not_fire_yet() -> None:
    eng = engine({"cart": CART})
    assert feed(eng, [ev("u", 0, "cart"), ev("other", AFTER)]) == [[], []]
    assert pending(eng) == [("cart", "u", AFTER)]
    assert feed(eng, [ev("other", AFTER + 1)]) == [[("cart", "u", None, AFTER)]]


def test_same_deadline_fires_in_arm_order() -> None:
    eng = engine({"cart": CART})
    users = ["zed", "amy", "9", "bob"]
    feed(eng, [ev(u, 100, "cart") for u in users])
    batches = feed(eng, [ev("x", 100 + AFTER + 1)])
    assert batches == [[("cart", u, None, 100 + AFTER) for u in users]]


def test_rearm_moves_a_timer_behind_later_armed_timers_of_the_same_deadline() -> None:
    scenes = {"cart": {**CART, "after": 10}}
    fired = run(scenes, [ev("a", 0, "cart"), ev("b", 0, "cart"), ev("a", 0, "cart"), ev("x", 11)])
    assert fired == [("cart", "b", None, 10), ("cart", "a", None, 10)]


def test_due_timers_fire_in_deadline_order_then_the_events_own_triggers() -> None:
    scenes = {
        "arr": {"kind": "arrival", "when": {"type": "page"}},
        "cart": {**CART, "after": 10},
    }
    eng = engine(scenes)
    feed(eng, [ev("late", 5, "cart"), ev("early", 2, "cart")])
    batches = feed(eng, [ev("p", 100, "page")])
    assert batches == [[("cart", "early", None, 12), ("cart", "late", None, 15),
                        ("arr", "p", None, 100)]]


def test_latest_start_in_input_order_wins_even_if_older() -> None:
    scenes = {"cart": {**CART, "after": 10}}
    eng = engine(scenes)
    feed(eng, [ev("u", 50, "cart"), ev("u", 40, "cart")])
    assert pending(eng) == [("cart", "u", 50)]


def test_late_event_arming_a_deadline_behind_the_clock_fires_before_next_event() -> None:
    scenes = {"cart": {**CART, "after": 10}}
    eng = engine(scenes)
    batches = feed(eng, [ev("x", 100), ev("u", 50, "cart"), ev("x", 100), ev("y", 100)])
    assert batches == [[], [], [("cart", "u", None, 60)], []]


def test_late_arm_behind_clock_fires_at_end_of_input() -> None:
    fired = run({"cart": {**CART, "after": 10}}, [ev("x", 100), ev("u", 50, "cart")])
    assert fired == [("cart", "u", None, 60)]


def test_late_arm_not_yet_behind_clock_stays_pending() -> None:
    eng = engine({"cart": {**CART, "after": 50}})
    feed(eng, [ev("x", 100), ev("u", 50, "cart")])
    assert eng.advance(eng.clock) == []
    assert pending(eng) == [("cart", "u", 100)]


def test_end_of_input_pending_and_fired() -> None:
    scenes = {"cart": {**CART, "after": 10}}
    eng = engine(scenes)
    feed(eng, [ev("a", 0, "cart"), ev("b", 1, "cart"), ev("c", 2, "cart"), ev("x", 11)])
    fired = eng.advance(eng.clock)
    # clock 11: a's deadline 10 is behind it (fired when x came), b's 11 equals it (pending)
    assert fired == []
    assert pending(eng) == [("cart", "b", 11), ("cart", "c", 12)]
    assert [(t.user_id, t.ts) for t in eng.advance(12)] == [("b", 11)]
    assert pending(eng) == [("cart", "c", 12)]


def test_advance_never_moves_the_clock_back() -> None:
    eng = engine({"cart": {**CART, "after": 10}})
    feed(eng, [ev("a", 100, "cart")])
    assert eng.advance(50) == []
    assert eng.clock == 100
    assert [t.ts for t in eng.advance(111)] == [110]


def test_cancel_and_start_on_one_event_cancel_wins() -> None:
    scenes = {"s": {"kind": "absence", "start": {"type": "cart"}, "cancel": {"page": "/thanks"},
                    "after": 10}}
    eng = engine(scenes)
    feed(eng, [ev("u", 0, "cart"), ev("u", 1, "cart", page="/thanks")])
    assert pending(eng) == []


def test_cancel_without_timer_and_absence_without_cancel() -> None:
    scenes = {"s": {"kind": "absence", "start": {"type": "cart"}, "after": 10}}
    fired = run(scenes, [ev("u", 0, "purchase"), ev("u", 1, "cart"), ev("u", 5, "purchase"),
                         ev("u", 20)])
    assert fired == [("s", "u", None, 11)]


def test_cancel_is_any_product_same_user_only() -> None:
    scenes = {"cart": {**CART, "after": 10}}
    fired = run(scenes, [ev("u", 0, "cart", product_id="a"), ev("v", 3, "purchase"),
                         ev("u", 4, "purchase", product_id="b"), ev("w", 0, "cart"),
                         ev("x", 30)])
    assert fired == [("cart", "w", None, 10)]


def test_timer_fires_once_then_needs_a_new_start() -> None:
    fired = run({"cart": {**CART, "after": 10}}, [ev("u", 0, "cart"), ev("u", 20), ev("u", 40)])
    assert fired == [("cart", "u", None, 10)]


def test_zero_after_fires_on_the_next_later_event() -> None:
    scenes = {"cart": {**CART, "after": 0}}
    eng = engine(scenes)
    assert feed(eng, [ev("u", 5, "cart"), ev("v", 5), ev("v", 6)]) == [
        [], [], [("cart", "u", None, 5)]]


def test_two_absence_scenes_share_the_clock_and_arm_order() -> None:
    scenes = {
        "b": {"kind": "absence", "start": {"type": "cart"}, "after": 10},
        "a": {"kind": "absence", "start": {"type": "cart"}, "after": 10},
    }
    assert run(scenes, [ev("u", 0, "cart"), ev("x", 11)]) == [
        ("b", "u", None, 10), ("a", "u", None, 10)]
