"""The identity merge field by field (triggers/merge.py merge_states,
merge_profiles, identify_refusal; docs/audiences.md "Identity"). Each
expected value is written out from the documented rule, never computed with
the module: sums add up, first is the earlier, last the later, the active-last
id's last product wins (K's on a tie), K's time zone unless K has none, the
longer purchase history's cycle, the later absence deadline (K's on a tie)."""

from __future__ import annotations

import pytest

from triggers.merge import (
    ADMIN_MERGE,
    REASON_CHAIN,
    REASON_CYCLE,
    REASON_KNOWN_USER,
    REASON_NO_KNOWN_ID,
    identify_refusal,
    merge_profiles,
    merge_states,
)
from triggers.profile import Profile
from triggers.state import KeyWindow, UserState

MAX_SAFE = 9_007_199_254_740_991  # 2**53 - 1, written out: JSON-safe integer cents


def window(when: list[int], unless: list[int], last_fire: int | None) -> KeyWindow:
    win = KeyWindow()
    win.when, win.unless, win.last_fire = when, unless, last_fire
    return win


def test_the_reasons_are_the_documented_wire_names() -> None:
    # Dead-letter reasons and metric labels: dashboards and alerts match them.
    assert (REASON_NO_KNOWN_ID, REASON_KNOWN_USER, REASON_CYCLE, REASON_CHAIN, ADMIN_MERGE) == (
        "identify_no_known_id", "identify_known_user", "identity_cycle", "identity_chain",
        "merge_users")


def test_refusal_details_name_both_ids_and_the_way_out() -> None:
    assert identify_refusal("k", "b", {}, {"k": {"a"}}) == (
        "identify_known_user", "'k' is a known user (others were merged into it): only "
        "`scenetrigger users merge` moves a known user")
    loop = identify_refusal("x", "y", {"y": "x"}, {})
    assert loop == ("identity_cycle", "'y' already stands for 'x': the merge would loop")


def test_a_known_id_merged_into_the_anonymous_one_is_a_cycle_without_its_alias() -> None:
    # The alias y -> x may live on another partition: merged[x] alone tells.
    assert identify_refusal("x", "y", {}, {"x": {"y"}}, admin=True) == (
        "identity_cycle", "'y' already stands for 'x': the merge would loop")
    assert identify_refusal("x", "y", {}, {"x": {"z"}}, admin=True) is None
    assert identify_refusal("x", "y", {"y": "w"}, {}) is None
    assert identify_refusal("a", "b", {}, {}) is None


def test_counters_and_histograms_add_up() -> None:
    known, anon = Profile(), Profile()
    for i, name in enumerate(("views", "searches", "category_views", "promo_views", "purchases",
                              "weekday", "weekend")):
        setattr(known, name, 10 + i)
        setattr(anon, name, 100 * (i + 1))
    known.hours = [1] * 24
    anon.hours = list(range(24))
    known.amount_cents, anon.amount_cents = 250, 1_000
    out = merge_profiles(known, anon)
    assert (out.views, out.searches, out.category_views, out.promo_views, out.purchases,
            out.weekday, out.weekend) == (110, 211, 312, 413, 514, 615, 716)
    assert out.hours == [1 + h for h in range(24)]
    assert out.amount_cents == 1_250


def test_the_amount_is_capped_at_the_largest_safe_integer() -> None:
    known, anon = Profile(), Profile()
    known.amount_cents, anon.amount_cents = MAX_SAFE - 1, 1
    assert merge_profiles(known, anon).amount_cents == MAX_SAFE  # exactly at the cap
    known.amount_cents = MAX_SAFE
    assert merge_profiles(known, anon).amount_cents == MAX_SAFE  # one above: capped


def test_histograms_of_different_lengths_are_refused_not_truncated() -> None:
    known, anon = Profile(), Profile()
    anon.hours = [1] * 23
    with pytest.raises(ValueError):
        merge_profiles(known, anon)


@pytest.mark.parametrize(("known_ts", "anon_ts", "first", "last"), [
    ((100, 500), (200, 900), 100, 900),
    ((300, 400), (50, 200), 50, 400),
    ((None, None), (50, 200), 50, 200),
    ((100, 500), (None, None), 100, 500),
    ((None, None), (None, None), None, None),
])
def test_first_is_the_earlier_and_last_the_later(known_ts: tuple[int | None, int | None],
                                                 anon_ts: tuple[int | None, int | None],
                                                 first: int | None, last: int | None) -> None:
    known, anon = Profile(), Profile()
    known.first_ts, known.last_ts = known_ts
    anon.first_ts, anon.last_ts = anon_ts
    known.first_purchase_ts, known.last_purchase_ts = known_ts
    anon.first_purchase_ts, anon.last_purchase_ts = anon_ts
    out = merge_profiles(known, anon)
    assert (out.first_ts, out.last_ts) == (first, last)
    assert (out.first_purchase_ts, out.last_purchase_ts) == (first, last)


@pytest.mark.parametrize(("known_last", "anon_last", "winner"), [
    (100, 200, "anon"),  # the anonymous id was active last
    (200, 100, "known"),
    (150, 150, "known"),  # a tie: K's
    (None, 1, "anon"),  # K never active: any activity of A is later
    (None, None, "known"),
])
def test_the_last_product_query_and_category_are_the_active_last_ids(
        known_last: int | None, anon_last: int | None, winner: str) -> None:
    known, anon = Profile(), Profile()
    known.last_ts, anon.last_ts = known_last, anon_last
    for p, who in ((known, "known"), (anon, "anon")):
        p.last_product, p.last_query, p.last_category = f"{who}-p", f"{who}-q", f"{who}-c"
    out = merge_profiles(known, anon)
    assert (out.last_product, out.last_query, out.last_category) == (
        f"{winner}-p", f"{winner}-q", f"{winner}-c")


def test_a_missing_last_product_falls_back_to_the_other_id() -> None:
    known, anon = Profile(), Profile()
    known.last_ts, anon.last_ts = 100, 200
    known.last_product, known.last_query, known.last_category = "kp", "kq", "kc"
    out = merge_profiles(known, anon)  # A is later but has none of them
    assert (out.last_product, out.last_query, out.last_category) == ("kp", "kq", "kc")


def test_time_zone_and_locale_are_knowns_unless_known_has_none() -> None:
    known, anon = Profile(), Profile()
    anon.tz, anon.locale = "Europe/Paris", "fr-FR"
    out = merge_profiles(known, anon)
    assert (out.tz, out.locale) == ("Europe/Paris", "fr-FR")
    known.tz, known.locale = "Asia/Shanghai", "zh-CN"
    out = merge_profiles(known, anon)
    assert (out.tz, out.locale) == ("Asia/Shanghai", "zh-CN")
    anon.tz = anon.locale = None
    out = merge_profiles(known, anon)
    assert (out.tz, out.locale) == ("Asia/Shanghai", "zh-CN")


@pytest.mark.parametrize(("known_buys", "anon_buys", "winner"), [
    (3, 2, "known"), (2, 3, "anon"), (2, 2, "known")])
def test_the_cycle_is_the_longer_purchase_historys(known_buys: int, anon_buys: int,
                                                   winner: str) -> None:
    known, anon = Profile(), Profile()
    known.purchases, anon.purchases = known_buys, anon_buys
    known.cycle, anon.cycle = [2, [111]], [2, [222]]
    known.cats, anon.cats = {"shoes": [1, 2, [111]]}, {"tea": [1, 2, [222]]}
    out = merge_profiles(known, anon)
    expected = {"known": ([2, [111]], {"shoes": [1, 2, [111]]}),
                "anon": ([2, [222]], {"tea": [1, 2, [222]]})}[winner]
    assert (out.cycle, out.cats) == expected
    out.cats["new"] = [0, 0, []]
    assert "new" not in known.cats and "new" not in anon.cats  # a copy


def test_a_missing_known_state_is_the_anonymous_one() -> None:
    anon = UserState()
    anon.max_ts = 70
    anon.timer = {"cart": (900, 3)}
    anon.fires = {"promo": {"/p": 40}}
    anon.windows = {"rv": {"sku": window([10, 20], [15], 20)}}
    anon.budget = [30, 50]
    anon.profile.views = 4
    out = merge_states(None, anon)
    assert (out.max_ts, out.timer, out.fires, out.budget, out.profile.views) == (
        70, {"cart": (900, 3)}, {"promo": {"/p": 40}}, [30, 50], 4)
    win = out.windows["rv"]["sku"]
    assert (win.when, win.unless, win.last_fire) == ([10, 20], [15], 20)


def test_the_known_state_is_kept_and_max_ts_is_the_newer() -> None:
    known, anon = UserState(), UserState()
    known.max_ts, known.profile.views = 500, 2
    anon.profile.views = 1
    out = merge_states(known, anon)
    assert (out.max_ts, out.profile.views) == (500, 3)
    anon.max_ts = 800
    assert merge_states(known, anon).max_ts == 800


def test_the_later_absence_deadline_is_kept_and_knowns_on_a_tie() -> None:
    known, anon = UserState(), UserState()
    # (deadline, arm seq): the deadline decides, never the sequence number.
    known.timer = {"a": (1_000, 5), "b": (1_000, 1), "tie": (700, 1), "k-only": (10, 1)}
    anon.timer = {"a": (2_000, 1), "b": (500, 900), "tie": (700, 9), "a-only": (20, 2)}
    out = merge_states(known, anon)
    assert out.timer == {"a": (2_000, 1), "b": (1_000, 1), "tie": (700, 1),
                           "k-only": (10, 1), "a-only": (20, 2)}
    assert known.timer["a"] == (1_000, 5)  # inputs untouched


def test_repeat_windows_are_the_union_newest_entries_kept() -> None:
    known, anon = UserState(), UserState()
    known.windows = {"rv": {"s1": window([1, 5, 9], [2, 8], None), "k": window([3], [], 4)},
                    "k-scene": {"x": window([7], [6], None)}}
    anon.windows = {"rv": {"s1": window([4, 6], [3, 7, 11], 12), "a": window([2], [1], None)},
                   "a-scene": {"y": window([8], [], 9)}}
    out = merge_states(known, anon, max_entries=3)
    seen = {scene: {key: (w.when, w.unless, w.last_fire) for key, w in wins.items()}
            for scene, wins in out.windows.items()}
    assert seen == {
        "rv": {"s1": ([5, 6, 9], [7, 8, 11], 12), "k": ([3], [], 4), "a": ([2], [1], None)},
        "k-scene": {"x": ([7], [6], None)},
        "a-scene": {"y": ([8], [], 9)},
    }


def test_the_newer_fire_time_wins_whichever_side_has_it() -> None:
    known, anon = UserState(), UserState()
    known.windows = {"rv": {"k": window([], [], 30), "a": window([], [], None),
                           "n": window([], [], None)}}
    anon.windows = {"rv": {"k": window([], [], None), "a": window([], [], 20),
                          "n": window([], [], None)}}
    out = merge_states(known, anon)
    assert {k: w.last_fire for k, w in out.windows["rv"].items()} == {"k": 30, "a": 20, "n": None}


def test_arrival_fire_times_are_the_newer_per_key() -> None:
    known, anon = UserState(), UserState()
    known.fires = {"promo": {"/p": 50, "/k": 5}, "k-scene": {"/x": 1}}
    anon.fires = {"promo": {"/p": 150, "/a": 10}, "a-scene": {"/y": 2}}
    out = merge_states(known, anon)
    assert out.fires == {"promo": {"/p": 150, "/k": 5, "/a": 10}, "k-scene": {"/x": 1},
                           "a-scene": {"/y": 2}}
    known.fires = {"promo": {"/p": 200}}
    assert merge_states(known, anon).fires["promo"]["/p"] == 200


def test_the_default_keeps_the_newest_64_entries_and_budget_times() -> None:
    known, anon = UserState(), UserState()
    known.windows = {"rv": {"s": window(list(range(0, 80, 2)), list(range(0, 80, 2)), None)}}
    anon.windows = {"rv": {"s": window(list(range(1, 80, 2)), list(range(1, 80, 2)), None)}}
    known.budget, anon.budget = list(range(0, 80, 2)), list(range(1, 80, 2))
    out = merge_states(known, anon)
    newest = list(range(16, 80))  # 80 timestamps 0..79, the newest 64
    win = out.windows["rv"]["s"]
    assert (win.when, win.unless, out.budget) == (newest, newest, newest)
