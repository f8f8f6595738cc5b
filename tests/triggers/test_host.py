"""The engine host: decoding under the input rules, the clock policy, counts."""

from __future__ import annotations

import orjson
import pytest

from triggers.errors import EventRejected
from triggers.events import Event, Trigger
from triggers.host import EngineHost, InputRules
from triggers.predicates import parse_predicate
from triggers.scenes import AbsenceScene, ArrivalScene, RepeatScene, Scene

SCENES: list[Scene] = [
    RepeatScene("rv", parse_predicate({"type": "view"}), 2, 60_000, per="product_id"),
    AbsenceScene("abandon", parse_predicate({"type": "cart"}), 1_000),
    ArrivalScene("promo", parse_predicate({"type": "page"})),
]


def line(user: str, ts: int, etype: str, **fields: object) -> bytes:
    return orjson.dumps({"user_id": user, "ts": ts, "type": etype, **fields})


def test_decoding_applies_the_rules_and_counts_rejects() -> None:
    host = EngineHost(SCENES, rules=InputRules(max_line_bytes=200, max_id_chars=20))
    assert host.ids.per_fields == ("product_id",)
    assert host.decode(line("u1", 1, "view", product_id="p")).user_id == "u1"
    for raw, reason in [(line("u" * 21, 1, "view"), "too_long"),
                        (line("u1", 1, "view", product_id="p" * 21), "too_long"),
                        (line("u1", 1, "view", pad="x" * 200), "too_large"),
                        (b"{", "invalid_json")]:
        with pytest.raises(EventRejected) as exc:
            host.decode(raw)
        assert exc.value.reason == reason
    with pytest.raises(EventRejected):
        host.decode_mapping({"user_id": "u" * 21, "ts": 1, "type": "view"})
    assert host.counts.rejected == {"too_long": 3, "too_large": 1, "invalid_json": 1}
    assert host.counts.taken == 0  # decoding takes nothing


def test_counts_list_every_scene_in_config_order_and_count_timers() -> None:
    host = EngineHost(SCENES)
    assert list(host.counts.triggers) == ["rv", "abandon", "promo"]
    ev = host.decode(line("u1", 1000, "cart"))
    assert host.take(ev) == []
    assert host.is_timer("abandon") and not host.is_timer("rv")
    assert host.tick(5_000) == []  # the event clock ignores the caller's now
    assert host.advance(2_001) == [Trigger("abandon", "u1", None, 2_000)]
    assert host.counts.taken == 1 and host.counts.triggers["abandon"] == 1


def test_wall_clock_advances_before_the_event() -> None:
    host = EngineHost(SCENES, clock="wall")
    cart = Event("u1", 1000, "cart", {"user_id": "u1", "ts": 1000, "type": "cart"})
    page = Event("u2", 1000, "page", {"user_id": "u2", "ts": 1000, "type": "page"})
    assert host.take(cart, now_ms=1000) == []
    assert host.due(1500) is None and host.due(2001) == 2000
    # the timer made due by the wall clock comes before the event's own trigger
    assert host.take(page, now_ms=5000) == [Trigger("abandon", "u1", None, 2000),
                                            Trigger("promo", "u2", None, 1000)]
    with pytest.raises(ValueError, match="clock"):
        EngineHost(SCENES, clock="lunar")  # type: ignore[arg-type]


def test_reconfigure_follows_the_new_scenes() -> None:
    host = EngineHost(SCENES, rules=InputRules(max_id_chars=20))
    host.reconfigure([ArrivalScene("promo", parse_predicate({"type": "page"}), per="page")],
                     rules=InputRules(max_id_chars=30))
    assert host.ids.per_fields == ("page",) and host.ids.max_chars == 30
    assert host.timer_scenes == frozenset()
    assert host.decode(line("u" * 25, 1, "page", page="/x")).user_id == "u" * 25
