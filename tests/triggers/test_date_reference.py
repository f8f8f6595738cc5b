"""Property test of the ``date`` kind: the engine (plain and encoded state,
one engine and two shards) against the reference model's reading of
docs/semantics-notes.md, "The date kind", on streams that span years."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.triggers.reference import REF_ZONES, Reference
from tests.triggers.test_against_reference import run_engine, run_shards

DAY = 86_400_000
START = int(datetime(2023, 1, 1, tzinfo=UTC).timestamp() * 1000)
ZONES = [*sorted(REF_ZONES), "Nowhere/Zone"]
VALUES = ["1990-06-17", "06-17", "02-29", "--02-29", "2024-02-29", "2023-12-31", "01-01",
          "2026-03-29", None, "soon", "1990-13-01"]
JUMPS = st.sampled_from([0, 1, 3_600_000, DAY, 30 * DAY, 200 * DAY, 400 * DAY])
USERS = st.sampled_from([{"segment": {"in": ["new_or_lapsed"]}},
                         {"segment": {"in": ["promising", "loyal"]}}])


@st.composite
def date_scene(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "date",
                            "attribute": draw(st.sampled_from(["birthday", "renews"]))}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "offset_days": st.sampled_from([-366, -3, 0, 1, 45, 366]),
        "at": st.sampled_from(["00:00", "02:30", "09:30", "23:59"]),
        "every": st.sampled_from(["year", "none"]),
        "timezone": st.sampled_from(sorted(REF_ZONES)),
        "user": USERS,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            spec[name] = draw(strategy)
    return spec


@st.composite
def stream(draw: st.DrawFn) -> list[dict[str, Any]]:
    newest = START + draw(st.integers(0, 365)) * DAY
    events = []
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.integers(0, 5)) == 0:
            ts = newest - draw(st.integers(0, 300_000))  # late, within the default allowance
        else:
            ts = newest + draw(JUMPS)
        newest = max(newest, ts)
        event: dict[str, Any] = {"user_id": draw(st.sampled_from(["u1", "u2"])), "ts": ts,
                                 "type": draw(st.sampled_from(["attributes", "attributes",
                                                               "view", "purchase"]))}
        if event["type"] == "attributes":
            for name in ("birthday", "renews"):
                if draw(st.booleans()):
                    event[name] = draw(st.sampled_from(VALUES))
        if draw(st.integers(0, 2)) == 0:
            event["tz"] = draw(st.sampled_from(ZONES))
        events.append(event)
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(date_scene(), min_size=1, max_size=3), stream(),
       st.sampled_from([None, 0, 400 * DAY, 1500 * DAY]), st.booleans())
def test_date_kind_equals_reference(specs: list[dict[str, Any]], events: list[dict[str, Any]],
                                    advance_by: int | None, encoded: bool) -> None:
    scenes = {f"d{i}": spec for i, spec in enumerate(specs)}
    late_ms = 300_000
    fired, pending, advance_to = run_engine(scenes, late_ms, events, advance_by, encoded)
    ref = Reference(scenes)
    expected = [t for event in events for t in ref.handle(event)]
    late, expected_pending = ref.finish(advance_to)
    assert fired == expected + late
    assert pending == expected_pending
    assert run_shards(scenes, late_ms, events, advance_to, 2) == (fired, pending)


def test_the_reference_is_not_vacuous() -> None:
    """A birthday fires every year until the clock stops, and the reference says so."""
    scenes = {"b": {"kind": "date", "attribute": "birthday", "at": "00:00"}}
    events = [{"user_id": "u", "ts": START, "type": "attributes", "birthday": "03-01"}]
    fired, pending, _ = run_engine(scenes, 0, events, 700 * DAY, False)
    years = [datetime.fromtimestamp(t[3] / 1000, UTC).date().isoformat() for t in fired]
    assert years == ["2023-03-01", "2024-03-01"]
    assert pending == [("b", "u", int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000))]
    ref = Reference({"b": {**scenes["b"], "offset_days": 1}})
    for event in events:
        ref.handle(event)
    assert ref.finish(START + 700 * DAY)[0] != fired
