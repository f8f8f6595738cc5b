"""Issue 19, point 6: event time is bounded against the wall clock.

A view stamped year 9999 was taken in wall mode: it fired, and the user's
cooldown then held that scene until 9999. One rule
(:func:`triggers.host.check_future`), applied by the worker's host
(``decode_record`` with the worker's clock), the collector and ``produce``
(tests/agents) and, when configured, replay under the event clock.
"""

from __future__ import annotations

import orjson
import pytest

from config.loader import load_config_text
from scenetrigger.runtime.replay import new_host, replay
from triggers.errors import EventRejected
from triggers.events import Event, Trigger
from triggers.host import DEFAULT_MAX_FUTURE_MS, EngineHost, InputRules, check_future
from triggers.predicates import parse_predicate
from triggers.scenes import ArrivalScene, RepeatScene, Scene

NOW = 1_700_000_000_000
YEAR_9999 = 253_402_300_799_000
HOUR = 3_600_000
SCENES: list[Scene] = [
    RepeatScene("rv", parse_predicate({"type": "view"}), 1, 60_000, per="product_id",
                cooldown_ms=86_400_000),
    ArrivalScene("promo", parse_predicate({"type": "page"})),
]


def raw(user: str, ts: int, etype: str = "view", **fields: object) -> bytes:
    return orjson.dumps({"user_id": user, "ts": ts, "type": etype, "product_id": "p", **fields})


def test_the_rule_and_its_boundary() -> None:
    assert DEFAULT_MAX_FUTURE_MS == HOUR
    check_future(NOW + HOUR, NOW, HOUR)  # exactly the limit ahead: taken
    check_future(YEAR_9999, NOW, None)  # no bound
    with pytest.raises(EventRejected) as exc:
        check_future(NOW + HOUR + 1, NOW, HOUR)
    assert exc.value.reason == "future_ts" and "engine.max_future" in exc.value.detail


def test_wall_mode_rejects_year_9999_and_the_scene_still_fires_after() -> None:
    host = EngineHost(SCENES, clock="wall")
    items = host.decode_record(b"[" + raw("u", YEAR_9999) + b"," + raw("u", NOW) + b"]", NOW)
    bad, good = items
    assert isinstance(bad, EventRejected) and bad.reason == "future_ts"
    assert isinstance(good, Event)
    assert host.counts.rejected == {"future_ts": 1}
    assert host.take(good, NOW) == [Trigger("rv", "u", "p", NOW)]
    # Without the bound the 9999 view fires and its cooldown holds the scene.
    open_host = EngineHost(SCENES, rules=InputRules(max_future_ms=None), clock="wall")
    first = open_host.decode_record(raw("u", YEAR_9999), NOW)[0]
    assert isinstance(first, Event)
    assert open_host.take(first, NOW) == [Trigger("rv", "u", "p", YEAR_9999)]
    later = open_host.decode_record(raw("u", NOW + 86_400_000 * 2), NOW)[0]
    assert isinstance(later, Event) and open_host.take(later, NOW) == []


def test_without_the_wall_clock_nothing_is_checked() -> None:
    host = EngineHost(SCENES, clock="wall")
    assert isinstance(host.decode_record(raw("u", YEAR_9999))[0], Event)


def test_event_clock_is_unbounded_by_default_and_configurable() -> None:
    host = EngineHost(SCENES)  # event clock: replay, worker --clock event
    assert host.max_future_ms is None
    assert isinstance(host.decode_record(raw("u", YEAR_9999), NOW)[0], Event)
    bounded = EngineHost(SCENES, rules=InputRules(max_future_event_clock_ms=HOUR))
    got = bounded.decode_record(raw("u", YEAR_9999), NOW)[0]
    assert isinstance(got, EventRejected) and got.reason == "future_ts"
    # and the wall clock's bound does not apply under the event clock
    wall_only = EngineHost(SCENES, rules=InputRules(max_future_ms=0))
    assert isinstance(wall_only.decode_record(raw("u", NOW + 1), NOW)[0], Event)


def test_config_sets_both_bounds() -> None:
    base = "scenes: {promo: {kind: arrival, when: {type: page}}}\n"
    assert load_config_text(base).engine.input_rules().max_future_ms == HOUR
    rules = load_config_text(base + "engine: {max_future: 10m, max_future_event_clock: 1d}\n"
                             ).engine.input_rules()
    assert (rules.max_future_ms, rules.max_future_event_clock_ms) == (600_000, 86_400_000)
    off = load_config_text(base + "engine: {max_future: null}\n").engine.input_rules()
    assert off.max_future_ms is None


def test_replay_applies_the_event_clock_bound_when_configured() -> None:
    text = "scenes: {promo: {kind: arrival, when: {type: page}, per: page}}\n"
    records = [(1, Event("u", YEAR_9999, "page", {"user_id": "u", "ts": YEAR_9999,
                                                   "type": "page", "page": "/a"})),
               (2, Event("u", NOW, "page", {"user_id": "u", "ts": NOW, "type": "page",
                                            "page": "/b"}))]
    fired: list[Trigger] = []
    summary = replay(records, new_host(load_config_text(text)), fired.append)
    assert [t.ts for t in fired] == [YEAR_9999, NOW]  # default: as the data says
    fired.clear()
    rejects: list[tuple[int, str]] = []
    host = new_host(load_config_text(text + "engine: {max_future_event_clock: 1h}\n"))
    summary = replay(records, host, fired.append, lambda n, exc: rejects.append((n, exc.reason)))
    assert [t.ts for t in fired] == [NOW] and rejects == [(1, "future_ts")]
    assert host.counts.rejected == summary.rejected == {"future_ts": 1}
