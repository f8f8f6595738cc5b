"""The `arrival` rule alone (triggers/kinds/arrival.py; SEMANTICS.md "Kinds"):
what it returns, what it remembers, the user filter, and the caps on the
keys it keeps. Expected values are written out from the rule's text."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from triggers.kinds.arrival import KIND, ArrivalScene
from triggers.kinds.base import Limits
from triggers.predicates import parse_predicate
from triggers.profile import Profile
from triggers.state import UserState
from triggers.userfilter import Refused

WHEN = parse_predicate({"page": {"prefix": "/promo"}})


class FakeFilter:
    """The :class:`triggers.userfilter.UserFilter` interface the rule uses."""

    def __init__(self, had: frozenset[str] | None) -> None:
        self.had = had
        self.asked: list[int] = []

    def refuses(self, profile: Profile, now_ms: int) -> frozenset[str] | None:
        self.asked.append(now_ms)
        return self.had


def rule(per: str | None = None, cooldown: int | None = None, user: FakeFilter | None = None,
         late: int = 300_000, max_keys: int = 256) -> Any:
    scene = ArrivalScene("promo", WHEN, per, cooldown, user)  # type: ignore[arg-type]
    return KIND.rule(scene, Limits(late_ms=late, max_keys=max_keys))


def page(path: str) -> dict[str, Any]:
    return {"type": "page", "page": path}


def test_a_non_matching_event_or_a_missing_key_does_not_fire() -> None:
    state = UserState()
    assert rule().apply(state, page("/home"), 10) is False
    assert rule().apply(state, page("/home"), 10, when_holds=True) is None  # the caller's answer
    assert rule().apply(state, page("/promo"), 10, when_holds=False) is False
    assert rule(per="sku").apply(state, page("/promo"), 10) is False  # no sku: no key
    assert state.fires == {}


def test_without_a_cooldown_every_match_fires_and_nothing_is_remembered() -> None:
    state = UserState()
    assert rule().apply(state, page("/promo/a"), 10) is None  # fires, no key
    assert rule(per="page").apply(state, page("/promo/a"), 10) == "/promo/a"
    assert state.fires == {}


def test_a_refused_user_gets_the_tags_it_had_with_or_without_a_cooldown() -> None:
    had = frozenset({"segment:new"})
    for cooldown in (None, 100):
        state = UserState()
        no_per = rule(cooldown=cooldown, user=FakeFilter(had)).apply(state, page("/promo"), 7)
        assert isinstance(no_per, Refused) and (no_per.key, no_per.had) == (None, had)
        with_per = rule("page", cooldown, FakeFilter(had)).apply(state, page("/promo/x"), 7)
        assert isinstance(with_per, Refused) and (with_per.key, with_per.had) == ("/promo/x", had)
        assert state.fires == {}  # a refused fire starts no cooldown
    passing = FakeFilter(None)
    assert rule("page", 100, passing).apply(UserState(), page("/promo/y"), 9) == "/promo/y"
    assert rule("page", None, passing).apply(UserState(), page("/promo/y"), 11) == "/promo/y"
    assert passing.asked == [9, 11]


def test_the_cooldown_is_half_open_per_key() -> None:
    state = UserState()
    arrival = rule(per="page", cooldown=100)
    assert arrival.apply(state, page("/promo/a"), 1_000) == "/promo/a"
    assert state.fires == {"promo": {"/promo/a": 1_000}}
    assert arrival.apply(state, page("/promo/a"), 1_099) is False  # 99 ms later
    assert arrival.apply(state, page("/promo/b"), 1_099) == "/promo/b"  # another key
    assert arrival.apply(state, page("/promo/a"), 1_100) == "/promo/a"  # 100 ms later
    assert state.fires == {"promo": {"/promo/a": 1_100, "/promo/b": 1_099}}
    assert arrival.apply(state, page("/promo/a"), 900) is False  # late, inside the cooldown


def test_a_filtered_user_keeps_the_earlier_fire_time() -> None:
    state = UserState()
    state.fires = {"promo": {"": 1_000}}
    refused = rule(cooldown=100, user=FakeFilter(frozenset({"x"}))).apply(
        state, page("/promo"), 2_000)
    assert isinstance(refused, Refused)
    assert state.fires == {"promo": {"": 1_000}}


def test_a_zero_cooldown_fires_on_the_same_ms_and_keeps_the_newest_time() -> None:
    state = UserState()
    state.fires = {"promo": {"": 1_000}}
    arrival = rule(cooldown=0)
    assert arrival.apply(state, page("/promo"), 1_000) is None
    assert arrival.apply(state, page("/promo"), 999) is False
    assert arrival.apply(state, page("/promo"), 1_200) is None
    assert state.fires == {"promo": {"": 1_200}}


def test_a_new_key_at_the_cap_drops_expired_keys_first() -> None:
    state = UserState()
    state.max_ts = 10_000
    # horizon = max_ts - cooldown - late = 10_000 - 100 - 1_000 = 8_900: a key
    # fired at or before it can no longer block anything.
    state.fires = {"promo": {"old": 8_900, "edge": 8_901, "new": 9_500}}
    arrival = rule(per="page", cooldown=100, late=1_000, max_keys=3)
    assert arrival.apply(state, page("/promo/z"), 10_000) == "/promo/z"
    assert state.fires == {"promo": {"edge": 8_901, "new": 9_500, "/promo/z": 10_000}}


def test_a_new_key_at_the_cap_with_none_expired_drops_the_least_recent_eighth() -> None:
    state = UserState()
    state.max_ts = 10_000
    fired = {f"k{i}": 9_000 + i for i in range(16)}  # none expired (horizon 8_900)
    state.fires = {"promo": dict(fired)}
    arrival = rule(per="page", cooldown=100, late=1_000, max_keys=16)
    assert arrival.apply(state, page("/promo/z"), 10_000) == "/promo/z"
    # keep = 16 - max(1, 16 // 8) = 14 of the old keys: k0 and k1 go.
    assert state.fires["promo"] == {**{f"k{i}": 9_000 + i for i in range(2, 16)},
                                      "/promo/z": 10_000}
    small = UserState()
    small.max_ts = 10_000
    small.fires = {"promo": {"a": 9_001, "b": 9_000, "c": 9_002}}
    assert rule("page", 100, None, 1_000, 3).apply(small, page("/promo/z"), 10_000) == "/promo/z"
    # keep = 3 - max(1, 3 // 8) = 2: only the least recent (b) goes.
    assert small.fires["promo"] == {"a": 9_001, "c": 9_002, "/promo/z": 10_000}


def test_a_known_key_at_the_cap_evicts_nothing() -> None:
    state = UserState()
    state.max_ts = 10_000
    state.fires = {"promo": {"/promo/a": 9_000, "/promo/b": 9_001}}
    assert rule("page", 100, None, 1_000, 2).apply(state, page("/promo/a"), 10_000) == "/promo/a"
    assert state.fires == {"promo": {"/promo/a": 10_000, "/promo/b": 9_001}}


def test_prune_drops_expired_keys_and_an_emptied_scene() -> None:
    arrival = rule(per="page", cooldown=100, late=1_000)
    state = UserState()
    state.max_ts = 10_000
    state.fires = {"promo": {"old": 8_900, "edge": 8_901}, "other": {"x": 1}}
    arrival.prune(state)
    assert state.fires == {"promo": {"edge": 8_901}, "other": {"x": 1}}
    state.max_ts = 10_001
    arrival.prune(state)
    assert state.fires == {"other": {"x": 1}}
    arrival.prune(state)  # nothing of its own: nothing changes
    assert state.fires == {"other": {"x": 1}}


def test_prune_without_a_cooldown_or_a_newest_time_keeps_everything() -> None:
    state = UserState()
    state.fires = {"promo": {"old": 1}}
    rule(per="page", cooldown=100).prune(state)  # max_ts None
    state.max_ts = 10_000_000
    rule(per="page").prune(state)  # no cooldown
    assert state.fires == {"promo": {"old": 1}}


def test_the_kind_describes_itself() -> None:
    scene = ArrivalScene("promo", WHEN, "page", 3_600_000)
    assert (KIND.name, KIND.timer, KIND.slot, KIND.reads_profile, scene.kind) == (
        "arrival", False, "fires", False, "arrival")
    assert KIND.predicates(scene) == (WHEN, None)
    shape = KIND.shape(scene)
    assert (shape.kind, shape.per, shape.when) == ("arrival", "page", None)
    assert KIND.describe(scene) == "arrival per page, cooldown 1h"
    assert KIND.describe(ArrivalScene("promo", WHEN)) == "arrival"
    assert rule().timer is False and rule().name == "promo"


def test_a_scene_built_with_its_defaults_fires_on_every_match_and_is_frozen() -> None:
    scene = ArrivalScene("promo", WHEN)  # no per, no cooldown, no user filter
    state = UserState()
    arrival = KIND.rule(scene, Limits())
    assert [arrival.apply(state, page("/promo"), ts) for ts in (1, 1, 2)] == [None, None, None]
    assert state.fires == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.per = "page"  # type: ignore[misc]
    with pytest.raises(TypeError):  # a scene's kind is its class's, never a caller's
        ArrivalScene("promo", WHEN, kind="repeat")  # type: ignore[call-arg]


def test_below_the_cap_a_new_key_drops_nothing_expired() -> None:
    # Expired keys go in prune() (its own schedule) or when the cap is reached.
    state = UserState()
    state.max_ts = 10_000
    state.fires = {"promo": {"old": 8_000}}
    assert rule("page", 100, None, 1_000, 3).apply(state, page("/promo/z"), 10_000) == "/promo/z"
    assert state.fires == {"promo": {"old": 8_000, "/promo/z": 10_000}}
