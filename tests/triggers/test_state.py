"""Per-user state: byte round trip, compact size, bounded under bot traffic, caps."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from config.loader import load_config
from tests.triggers.helpers import engine, ev, feed
from triggers import Engine, Limits, StateDecodeError
from triggers.events import event_from_mapping
from triggers.state import BytesStore, UserState

T0 = 1_569_888_000_000
MINUTE = 60_000


def shipped(limits: Limits | None = None, store: Any = None) -> Engine:
    return Engine(load_config().scene_list(), store=store, limits=limits)


def typical_user_events() -> list[dict[str, Any]]:
    """An active shopper: 20 product views over 20 minutes, a cart, a promo page."""
    events = [
        ev("541312140", T0 + i * MINUTE, product_id=str(44600000 + i % 5),
           category="electronics.smartphone", brand="apple", price="35.79",
           session_id="72d76fde-8bb3-4e00-8c23-a032dfed738c")
        for i in range(20)
    ]
    events.append(ev("541312140", T0 + 21 * MINUTE, "cart", product_id="44600001", price="35.79"))
    events.append(ev("541312140", T0 + 22 * MINUTE, "page", page="/promo/autumn"))
    return events


def test_round_trip_is_exact() -> None:
    eng = shipped()
    feed(eng, typical_user_events())
    state = eng.store.get("541312140")
    assert state is not None
    data = state.encode()
    again = UserState.decode(data)
    assert again.encode() == data
    assert again.timer == state.timer
    assert again.fires == state.fires
    assert {k: (w.when, w.unless, w.last_fire) for k, w in
            again.windows["repeat_view_no_purchase"].items()} == {
        k: (w.when, w.unless, w.last_fire) for k, w in
        state.windows["repeat_view_no_purchase"].items()}


def test_without_profiles_the_state_round_trips_with_a_default_profile() -> None:
    """An engine that keeps no profiles (a replay that only reports triggers)
    fires the same and stores the same windows; its profile is the empty one,
    and the bytes still round trip (through a BytesStore too)."""
    events = [*typical_user_events(), ev("541312140", T0 + 60 * MINUTE, "purchase", price="9")]
    on, off = shipped(), shipped()
    off.track_profile = False
    assert feed(on, events) == feed(off, events)
    state_on, state_off = on.store.get("541312140"), off.store.get("541312140")
    assert state_on is not None and state_off is not None
    assert state_on.profile.views == 20  # the profile did see the events when on
    assert state_off.profile.to_wire() == UserState().profile.to_wire()
    data = state_off.encode()
    assert UserState.decode(data).encode() == data
    wire_on, wire_off = orjson.loads(state_on.encode()), orjson.loads(data)
    assert wire_on[:5] == wire_off[:5]  # everything but the profile is the same
    stored = Engine(load_config().scene_list(), store=BytesStore({}), track_profile=False)
    assert feed(stored, events) == feed(shipped(), events)


def test_bytes_store_gives_the_same_triggers_as_memory() -> None:
    events = [*typical_user_events(), ev("x", T0 + 60 * MINUTE)]
    mem = feed(shipped(), events)
    encoded = feed(shipped(store=BytesStore({})), events)
    assert mem == encoded
    assert any(mem)


def test_typical_active_user_is_well_under_1kb() -> None:
    eng = shipped()
    feed(eng, typical_user_events())
    state = eng.store.get("541312140")
    assert state is not None
    assert len(state.encode()) < 700


@pytest.mark.parametrize("distinct", [1, 300, 10_000])
def test_bot_with_10k_views_in_30_minutes_stays_bounded(distinct: int) -> None:
    limits = Limits()
    eng = shipped(limits)
    for i in range(10_000):
        eng.handle(event_from_mapping(ev("bot", T0 + i * 180, product_id=str(i % distinct),
                                         page=f"/promo/{i % distinct}")))
    state = eng.store.get("bot")
    assert state is not None
    for keys in state.windows.values():
        assert len(keys) <= limits.max_keys
        assert all(len(w.when) <= limits.max_window_entries for w in keys.values())
    for fired in state.fires.values():
        assert len(fired) <= limits.max_keys
    assert len(state.encode()) < 32 * 1024


def test_old_entries_are_pruned_as_time_moves_on() -> None:
    eng = shipped()
    feed(eng, typical_user_events())
    feed(eng, [ev("541312140", T0 + 2 * 24 * 60 * MINUTE, "search", query="x")])
    eng.prune_user("541312140")
    state = eng.store.get("541312140")
    assert state is not None
    assert state.windows == {}
    assert state.fires == {}
    assert len(state.encode()) < 300


def test_key_cap_keeps_the_newest_keys() -> None:
    eng = engine({"r": {"kind": "repeat", "when": {}, "per": "product_id", "count": 2,
                        "within": 1000}}, Limits(max_keys=2))
    batches = feed(eng, [ev("u", 0, product_id="a"), ev("u", 1, product_id="b"),
                         ev("u", 2, product_id="c"), ev("u", 3, product_id="a"),
                         ev("u", 4, product_id="c")])
    # "a" was evicted as the stalest key when "c" came, so its second view counts once
    assert [b for b in batches if b] == [[("r", "u", "c", 4)]]


def test_window_cap_keeps_the_newest_entries() -> None:
    eng = engine({"r": {"kind": "repeat", "when": {}, "count": 2, "within": 1000}},
                 Limits(max_window_entries=3))
    feed(eng, [ev("u", t) for t in range(10)])
    state = eng.store.get("u")
    assert state is not None
    assert state.windows["r"][""].when == [7, 8, 9]


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b"[99, 0, {}, {}, {}, []]",
    b"[1, 0, {}, {}, {}]",  # a field short
    b"[1, 0, [], {}, {}, []]",  # repeat is not a mapping
    b'[1, 0, {"s": {"k": [[], []]}}, {}, {}, []]',  # a window without its fire time
    b'[1, 0, {}, {"s": 5}, {}, []]',  # a timer that is not [deadline, seq]
])
def test_unreadable_state_raises_a_state_decode_error(data: bytes) -> None:
    with pytest.raises(StateDecodeError):
        UserState.decode(data)


def test_bad_prices_and_long_ids_neither_stop_the_stream_nor_break_the_encoding() -> None:
    eng = shipped(store=BytesStore({}))
    prices = ["inf", "-inf", "nan", "1e300", 1e308, -5, "12.34", ["1"], "x"]
    for i, price in enumerate(prices):
        eng.handle(event_from_mapping(ev("u", T0 + i, "purchase", price=price)))
    eng.handle(event_from_mapping(ev("u", T0 + 99, product_id="p" * 10_000)))
    state = eng.store.get("u")
    assert state is not None
    assert state.profile.purchases == len(prices)
    assert state.profile.amount_cents == 1234  # only the one sane price counts
    assert state.profile.last_product == "p" * 200


def test_the_shipped_budget_caps_a_bots_triggers_and_its_state() -> None:
    """Issue 19: 100,000 distinct promo pages in 30 minutes fired 100,000 triggers."""
    config = load_config()
    limits = config.engine.limits()
    assert limits.budget is not None and (limits.budget.count, limits.budget.within_ms) == (
        20, 60 * MINUTE)
    eng = Engine(config.scene_list(), limits=limits)
    fired = []
    for i in range(100_000):  # 30 minutes
        fired += eng.handle(event_from_mapping(ev("bot", T0 + i * 18, "page",
                                                  page=f"/promo/{i}")))
    assert len(fired) == 20 and eng.budget_refused == {"promo_arrival": 99_980}
    state = eng.store.get("bot")
    assert state is not None and state.budget == [t.ts for t in fired]
    assert len(state.encode()) < 32 * 1024


def test_state_version_1_is_still_read_and_version_2_keeps_the_budget() -> None:
    v1 = orjson.dumps([1, T0, {}, {}, {"promo_arrival": {"/promo": T0}}, UserState().profile
                       .to_wire()])
    old = UserState.decode(v1)
    assert old.fires == {"promo_arrival": {"/promo": T0}} and old.budget == []
    old.budget = [T0 - 5, T0]
    data = old.encode()
    assert orjson.loads(data)[0] == 2 and orjson.loads(data)[-1] == [5, 0]  # offsets from max_ts
    assert UserState.decode(data).budget == [T0 - 5, T0]
    with pytest.raises(StateDecodeError, match="version 4"):  # 3 has the audiences' data
        UserState.decode(orjson.dumps([4, *orjson.loads(data)[1:]]))


def test_an_identity_merge_keeps_both_ids_given_triggers() -> None:
    from triggers.merge import merge_states

    known, anonymous = UserState(), UserState()
    known.budget, anonymous.budget = [1, 5, 9], [3, 7]
    assert merge_states(known, anonymous, max_entries=4).budget == [3, 5, 7, 9]
    assert merge_states(None, anonymous).budget == [3, 7]
