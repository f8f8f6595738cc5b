"""Property test: the engine and the brute-force reference agree trigger for trigger.

Streams stay within the engine's late allowance (``Limits.late_ms``): an
event is never older than ``late_ms`` before the newest ``ts`` of the stream
(so never older than that before its own user's newest event either).
Inside that allowance the engine promises exact results; beyond it, it may
have pruned the window the late event would need (docs/semantics-notes.md).
Streams are also shorter than the per-user caps (``max_window_entries``,
``max_keys``), which only bite on bot-sized traffic. The per-user trigger
budget (``engine.max_triggers_per_user``) is drawn small so that it bites.
"""

from __future__ import annotations

import heapq
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from config.loader import validate_config
from scenetrigger.runtime.replay import replay
from scenetrigger.runtime.replay_shards import replay_shard
from scenetrigger.runtime.sources import Record
from tests.triggers.reference import Reference, run_reference
from triggers import Engine, Limits, Trigger
from triggers.budget import TriggerBudget
from triggers.errors import EventRejected
from triggers.events import REFUSED_BUDGET, event_from_mapping
from triggers.state import BytesStore, MemoryStore, StateStore

MISSING = object()

PREDICATES: list[dict[str, Any]] = [
    {"type": "view"},
    {"type": "cart"},
    {"type": "purchase"},
    {"type": {"in": ["view", "cart"]}},
    {"page": {"prefix": "/promo"}},
    {},
    {"type": "view", "product_id": {"prefix": "p"}},
    {"product_id": 1},
    {"product_id": ""},
    {"product_id": {"in": ["", "p1", 1], "prefix": "p"}},
    {"flag": True},
    {"price": 1.5},
]
PER_FIELDS = ["product_id", "page", "flag"]

# Segment filters (the part of `user:` the reference models): with the
# stream's prices only the purchase count moves users between segments.
USER_FILTERS = st.lists(st.sampled_from(["new_or_lapsed", "promising", "loyal", "champion"]),
                        min_size=1, max_size=2, unique=True).map(
    lambda names: {"segment": {"in": names}})
durations = st.one_of(st.integers(0, 60), st.integers(0, 60).map(lambda n: f"{n}ms"))
predicates = st.sampled_from(PREDICATES)
maybe = st.none().__or__  # a strategy or None


@st.composite
def scene_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["repeat", "absence", "arrival", "sequence", "replenishment"]))
    spec: dict[str, Any] = {"kind": kind}
    if kind == "repeat":
        spec["when"] = draw(predicates)
        spec["count"] = draw(st.integers(1, 4))
        spec["within"] = draw(st.integers(1, 60))
        optional = {"per": st.sampled_from(PER_FIELDS), "unless": predicates,
                    "cooldown": durations}
    elif kind == "sequence":
        spec["first"] = draw(predicates)
        spec["then"] = draw(predicates)
        spec["within"] = draw(st.integers(1, 60))
        optional = {"per": st.sampled_from(PER_FIELDS), "unless": predicates,
                    "cooldown": durations}
    elif kind == "replenishment":
        spec["margin"] = draw(durations)
        optional = {"category": st.sampled_from(["a", "b"]),
                    "min_intervals": st.integers(1, 3),
                    "max_spread": st.sampled_from([0.25, 0.5, 1.0])}
    elif kind == "absence":
        spec["start"] = draw(predicates)
        spec["after"] = draw(durations)
        optional = {"cancel": predicates}
    else:
        spec["when"] = draw(predicates)
        optional = {"per": st.sampled_from(PER_FIELDS), "cooldown": durations}
    optional["user"] = USER_FILTERS
    for name, strategy in optional.items():
        if draw(st.booleans()):
            spec[name] = draw(strategy)
    return spec


configs = st.lists(scene_specs(), min_size=1, max_size=4).map(
    lambda specs: {f"s{i}": spec for i, spec in enumerate(specs)}
)

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "product_id": st.sampled_from([MISSING, None, "", "p1", "p2", 1, "1"]),
    "page": st.sampled_from([MISSING, None, "", "/promo", "/promo/x", "/home"]),
    "flag": st.sampled_from([MISSING, True, False, "true", 0]),
    "price": st.sampled_from([MISSING, 1.5, "1.5", 2]),
    "category": st.sampled_from([MISSING, "a", "b"]),
}
# Jumps that make purchase occasions (replenishment): around the one-hour gap.
JUMPS = st.sampled_from([3_599_999, 3_600_000, 3_600_001, 7_200_000, 7_200_002, 86_400_000])


@st.composite
def streams(draw: st.DrawFn, late_ms: int) -> list[dict[str, Any]]:
    size = draw(st.integers(0, 40))
    newest = 1_000_000
    events = []
    for _ in range(size):
        if draw(st.integers(0, 4)) == 0:
            ts = newest - draw(st.integers(0, late_ms))  # late, within the allowance
        elif draw(st.integers(0, 5)) == 0:
            ts = newest + draw(JUMPS)
        else:
            ts = newest + draw(st.integers(0, 12))  # ties are common on purpose
        newest = max(newest, ts)
        event: dict[str, Any] = {
            "user_id": draw(st.sampled_from(["u1", "u2", "3", 3])),
            "ts": ts,
            "type": draw(st.sampled_from(["view", "view", "cart", "purchase", "page"])),
        }
        for name, values in FIELD_VALUES.items():
            value = draw(values)
            if value is not MISSING:
                event[name] = value
        events.append(event)
    return events


Budget = tuple[int, int] | None  # (count, within ms): engine.max_triggers_per_user
Case = tuple[dict[str, Any], int, list[dict[str, Any]], int | None, bool, Budget]
budgets = st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 40)))


def limits(late_ms: int, budget: Budget) -> Limits:
    return Limits(late_ms=late_ms, budget=None if budget is None else TriggerBudget(*budget))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    scenes = draw(configs)
    late_ms = draw(st.sampled_from([0, 5, 30, 100, Limits().late_ms]))
    events = draw(streams(late_ms))
    advance = draw(st.one_of(st.none(), st.integers(0, 100)))
    return scenes, late_ms, events, advance, draw(st.booleans()), draw(budgets)


def run_engine(
    scenes: dict[str, Any], late_ms: int, events: list[dict[str, Any]],
    advance_by: int | None, encoded: bool, budget: Budget = None,
    refused: list[tuple[str, str, str | None, int]] | None = None,
) -> tuple[list[tuple[str, str, str | None, int]], list[tuple[str, str, int]], int | None]:
    config = validate_config({"scenes": scenes})
    store: StateStore = BytesStore({}) if encoded else MemoryStore()
    engine = Engine(config.scene_list(), store=store, limits=limits(late_ms, budget))
    records: list[Record] = [(n, event_from_mapping(dict(e))) for n, e in enumerate(events, 1)]
    fired: list[Trigger] = []
    advance_to = None
    if advance_by is not None and events:
        advance_to = max(e["ts"] for e in events) + advance_by
    summary = replay(records, engine, fired.append, advance_to=advance_to)
    out = [(t.scene, t.user_id, t.key, t.ts) for t in fired]
    if refused is not None:
        refused += [(r.scene, r.user_id, r.key, r.ts) for r in engine.take_refusals()
                    if r.rule == REFUSED_BUDGET]
    return out, [(p.scene, p.user_id, p.deadline) for p in summary.pending], advance_to


def run_shards(
    scenes: dict[str, Any], late_ms: int, events: list[dict[str, Any]], advance_to: int | None,
    shards: int, budget: Budget = None,
) -> tuple[list[tuple[str, str, str | None, int]], list[tuple[str, str, int]]]:
    """What replay_sharded does, with the shards run one after the other in-process."""
    config = validate_config({"scenes": scenes})
    records: list[Record] = [(n, event_from_mapping(dict(e))) for n, e in enumerate(events, 1)]
    results = [
        replay_shard(records, Engine(config.scene_list(), limits=limits(late_ms, budget)),
                     k, shards, advance_to)
        for k in range(shards)
    ]
    merged = heapq.merge(*(r.triggers for r in results))  # unique tags
    pending = sorted((p for r in results for p in r.pending), key=lambda p: p[0])
    return [t[1:] for t in merged], [p[1:] for p in pending]


# A filtered-out fire starts no cooldown: the purchase at the same ts makes
# user 3 `promising`, and the repeat fires although it "would have" just fired.
FILTERED_THEN_ADMITTED = (
    {"s0": {"kind": "repeat", "when": {}, "count": 1, "within": 1, "cooldown": 1,
            "user": {"segment": {"in": ["promising"]}}}},
    0,
    [{"user_id": "3", "ts": 1_000_000, "type": "view"},
     {"user_id": 3, "ts": 1_000_000, "type": "purchase"}],
    None,
    False,
    None,
)
# A budget of 1 within 10 ms: a timer fired after the user's arrival is refused,
# and the scene's cooldown started all the same (the second view is not refused:
# it does not fire).
BUDGET_SPENT = (
    {"a": {"kind": "arrival", "when": {"type": "view"}, "cooldown": 50},
     "b": {"kind": "absence", "start": {"type": "cart"}, "after": 1}},
    0,
    [{"user_id": "u1", "ts": 1_000_000, "type": "cart"},
     {"user_id": "u1", "ts": 1_000_000, "type": "view"},
     {"user_id": "u1", "ts": 1_000_005, "type": "view"},
     {"user_id": "u2", "ts": 1_000_020, "type": "view"}],
    None,
    True,
    (1, 10),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example(FILTERED_THEN_ADMITTED)
@example(BUDGET_SPENT)
def test_engine_equals_reference(case: Case) -> None:
    scenes, late_ms, events, advance_by, encoded, budget = case
    refused: list[tuple[str, str, str | None, int]] = []
    fired, pending, advance_to = run_engine(scenes, late_ms, events, advance_by, encoded,
                                            budget, refused)
    ref = Reference(scenes, budget=budget)
    expected_fired = [t for event in events for t in ref.handle(event)]
    expected_late, expected_pending = ref.finish(advance_to)
    assert fired == expected_fired + expected_late
    assert pending == expected_pending
    assert refused == ref.refused  # every refused trigger has its refusal, in order
    # sharded replay's merge puts every trigger back where one engine emits it
    assert run_shards(scenes, late_ms, events, advance_to, 2, budget) == (fired, pending)


def test_the_budget_example_refuses_what_it_should() -> None:
    """BUDGET_SPENT is not vacuous: the timer at 1_000_001 is refused."""
    scenes, late_ms, events, _, encoded, budget = BUDGET_SPENT
    refused: list[tuple[str, str, str | None, int]] = []
    fired, _, _ = run_engine(scenes, late_ms, events, None, encoded, budget, refused)
    assert fired == [("a", "u1", None, 1_000_000), ("a", "u2", None, 1_000_020)]
    assert refused == [("b", "u1", None, 1_000_001)]
    assert run_engine(scenes, late_ms, events, None, encoded)[0] == [
        ("a", "u1", None, 1_000_000), ("b", "u1", None, 1_000_001),
        ("a", "u2", None, 1_000_020)]


def test_reference_is_not_trivially_agreeing() -> None:
    """The comparison can fail: a changed count gives different triggers."""
    events = [{"user_id": "u", "ts": t, "type": "view"} for t in (0, 1, 2)]
    scenes = {"r": {"kind": "repeat", "when": {"type": "view"}, "count": 2, "within": 10}}
    fired, _, _ = run_engine(scenes, 0, events, None, False)
    assert fired == [("r", "u", None, 1), ("r", "u", None, 2)]
    other = {"r": {**scenes["r"], "count": 3}}
    assert run_reference(other, events)[0] != fired


def test_rejected_records_are_not_taken() -> None:
    scenes = {"a": {"kind": "arrival", "when": {}}}
    engine = Engine(validate_config({"scenes": scenes}).scene_list())
    fired: list[Trigger] = []
    records: list[Record] = [(1, EventRejected("invalid_json", "x")),
                             (2, event_from_mapping({"user_id": "u", "ts": 5, "type": "view"}))]
    summary = replay(records, engine, fired.append)
    assert [(t.scene, t.ts) for t in fired] == [("a", 5)]
    assert summary.rejected == {"invalid_json": 1}
