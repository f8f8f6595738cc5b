"""Engine plumbing that must not change results: rule selection by event type,
its bounded cache, events built by hand, reconfigure, stores."""

from __future__ import annotations

from typing import Any

from config.loader import validate_config
from tests.triggers.helpers import engine, ev, feed
from triggers import Event, Trigger
from triggers.engine import _MAX_TYPES_CACHED
from triggers.state import BytesStore


def fired(batches: list[list[Any]]) -> list[Any]:
    return [t for batch in batches for t in batch]


def test_many_distinct_types_keep_the_cache_bounded_and_results_right() -> None:
    eng = engine({
        "any": {"kind": "arrival", "when": {}},
        "views": {"kind": "arrival", "when": {"type": "view"}},
        "t7": {"kind": "arrival", "when": {"type": {"prefix": "t7"}}},
    })
    types = [f"t{i}" for i in range(_MAX_TYPES_CACHED + 200)] + ["view"]
    out = fired(feed(eng, [ev("u", i, t) for i, t in enumerate(types)]))
    assert len(eng._by_type) <= _MAX_TYPES_CACHED
    assert sum(1 for t in out if t[0] == "any") == len(types)
    assert [t[3] for t in out if t[0] == "views"] == [len(types) - 1]
    assert len([t for t in out if t[0] == "t7"]) == sum(1 for t in types if t.startswith("t7"))


def test_hand_built_events_use_their_fields_type() -> None:
    eng = engine({
        "views": {"kind": "arrival", "when": {"type": "view"}},
        "any": {"kind": "arrival", "when": {}},
    })
    no_type = Event("u", 1, "view", {"user_id": "u", "ts": 1})
    numeric = Event("u", 2, "view", {"user_id": "u", "ts": 2, "type": 5})
    out: list[Trigger] = eng.handle(no_type) + eng.handle(numeric)
    assert [(t.scene, t.ts) for t in out] == [("any", 1), ("any", 2)]


def test_predicates_on_type_and_other_fields_are_still_tested_per_event() -> None:
    scenes = {"r": {"kind": "repeat", "when": {"type": "view", "page": {"prefix": "/p"}},
                    "unless": {"type": "purchase"}, "count": 2, "within": 100}}
    eng = engine(scenes)
    out = fired(feed(eng, [ev("u", 0, page="/p1"), ev("u", 1, page="/x"),
                           ev("u", 2, page="/p2"), ev("u", 3, "purchase"),
                           ev("u", 4, page="/p3")]))
    assert out == [("r", "u", None, 2)]


def test_reconfigure_replaces_the_type_plan() -> None:
    eng = engine({"a": {"kind": "arrival", "when": {"type": "view"}}})
    assert fired(feed(eng, [ev("u", 0)])) == [("a", "u", None, 0)]
    new = validate_config({"scenes": {"b": {"kind": "arrival", "when": {"type": "cart"}}}})
    eng.reconfigure(new.scene_list())
    assert fired(feed(eng, [ev("u", 1), ev("u", 2, "cart")])) == [("b", "u", None, 2)]


def test_bytes_store_engine_fires_timers_from_stored_state() -> None:
    mapping: dict[str, bytes] = {}
    scenes = {"cart": {"kind": "absence", "start": {"type": "cart"}, "after": 10}}
    eng = engine(scenes)
    eng2 = type(eng)(validate_config({"scenes": scenes}).scene_list(), store=BytesStore(mapping))
    events = [ev("u", 0, "cart"), ev("v", 5, "cart"), ev("x", 30)]
    assert feed(eng2, events) == feed(eng, events)
    assert set(mapping) == {"u", "v", "x"}
    assert eng2.rebuild_timers() == 0
