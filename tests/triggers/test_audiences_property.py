"""Random event streams in time order: the audience tracker's enter and exit
events equal the brute-force model of test_audiences_reference (scene fires
from the reference engine), including the exits the clock makes after the
last event (``advance``) and events of one instant."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.loader import validate_config
from tests.triggers.reference import run_reference
from tests.triggers.test_audiences_reference import collapse, model_changes
from triggers.events import event_from_mapping
from triggers.host import EngineHost

T0 = 1_700_000_000_000
MIN = 60_000
SCENES: dict[str, Any] = {
    "viewed": {"kind": "repeat", "when": {"type": "view"}, "per": "product_id", "count": 2,
               "within": "10m", "unless": {"type": "purchase"}},
    "carted": {"kind": "absence", "start": {"type": "cart"}, "cancel": {"type": "purchase"},
               "after": "15m"},
}
events_st = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                               st.sampled_from(["view", "view", "cart", "purchase", "page"]),
                               st.sampled_from(["p1", "p2"]), st.integers(0, 12)),
                     min_size=1, max_size=40)
windows = st.integers(1, 40).map(lambda m: f"{m}m")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_st, windows, windows, windows, st.integers(0, 90))
def test_the_tracker_equals_the_model(raw: list[tuple[str, str, str, int]], fired_within: str,
                                      none_within: str, within: str, after_min: int) -> None:
    audiences: dict[str, Any] = {
        "not_bought": {"fired": {"scene": ["viewed", "carted"], "within": fired_within},
                       "purchase": {"none_within": none_within}},
        "buyers": {"purchase": {"within": within}},
    }
    config = validate_config({"scenes": SCENES, "audiences": audiences,
                              "engine": {"max_triggers_per_user": None}})
    events, ts = [], T0
    for user, etype, product, step in raw:
        ts += step * MIN // 4
        events.append({"user_id": user, "ts": ts, "type": etype, "product_id": product})
    end = ts + after_min * MIN
    host = EngineHost(config.scene_list(), config.engine.limits())
    tracker = host.audiences = config.audience_tracker(host.engine.store)
    assert tracker is not None
    for event in events:
        host.take(event_from_mapping(event))
    host.advance(end)
    got: list[tuple[str, str, str, int]] = [
        (c.audience, c.user_id, c.op, round(c.ts * 1000)) for c in tracker.take()]
    fires, _pending = run_reference(SCENES, events, advance_to=end)
    assert collapse(got) == collapse(model_changes(events, fires, end, audiences))
