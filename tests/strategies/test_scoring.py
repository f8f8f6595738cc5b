"""Lead score decay (half-life halves) and one handoff per threshold crossing."""

from __future__ import annotations

import math

import pytest

from config.strategy_models import HandoffModel, ScoringModel
from strategies.scoring import LeadScore, LeadScorer
from tests.strategies.helpers import DAY, HOUR, T0
from triggers.events import Event

HL = 7 * DAY


def scorer(threshold: float | None = 50.0) -> LeadScorer:
    handoff = HandoffModel(channel="crm_webhook") if threshold is not None else None
    return LeadScorer(ScoringModel(points={"view": 1, "cart": 5, "purchase": 20},
                                   half_life=HL, threshold=threshold, handoff=handoff))


@pytest.mark.parametrize("start", [40.0, 100.0, 3.5])
def test_each_half_life_halves_the_score(start: float) -> None:
    s = scorer(None)
    s.adjust("u", start, T0)
    for k in range(5):
        assert math.isclose(s.score_at("u", T0 + k * HL), start / 2**k, rel_tol=1e-12)
    # and in between, the curve is the exponential one
    assert math.isclose(s.score_at("u", T0 + HL // 2), start / math.sqrt(2), rel_tol=1e-12)


def test_points_per_behaviour_come_from_config() -> None:
    s = scorer(None)
    for i, kind in enumerate(["view", "view", "cart", "purchase", "page"]):
        s.on_event(Event("u", T0 + i, kind, {"type": kind}))
    expected = sum(p * 2 ** (-(4 - i) / HL) for i, p in enumerate([1, 1, 5, 20]))
    assert math.isclose(s.score_at("u", T0 + 4), expected, rel_tol=1e-12)


def test_one_handoff_per_crossing_and_it_rearms_below_the_threshold() -> None:
    s = scorer(50.0)
    assert s.adjust("u", 30, T0) == []
    first = s.adjust("u", 30, T0 + HOUR)
    assert [(h.user_id, h.channel, h.ts) for h in first] == [("u", "crm_webhook", T0 + HOUR)]
    assert first[0].score >= 50
    # staying above: no second handoff however much it grows
    assert all(s.adjust("u", 20, T0 + HOUR + i) == [] for i in range(1, 10))
    # decays below the threshold, then crosses again: exactly one more handoff
    t = T0 + 5 * HL
    assert s.score_at("u", t) < 50
    assert s.adjust("u", 1, t) == []
    again = s.adjust("u", 60, t + 1)
    assert [h.ts for h in again] == [t + 1]
    assert s.adjust("u", 60, t + 2) == []


def test_reaching_exactly_the_threshold_counts_as_crossing() -> None:
    s = scorer(50.0)
    assert len(s.adjust("u", 50, T0)) == 1


def test_a_late_event_adds_its_points_already_decayed() -> None:
    s = scorer(None)
    s.adjust("u", 10, T0 + HL)
    s.adjust("u", 8, T0)  # one half-life older than the stored time
    assert math.isclose(s.score_at("u", T0 + HL), 14.0, rel_tol=1e-12)


def test_wire_round_trip() -> None:
    score = LeadScore(12.5, T0, False)
    assert LeadScore.from_wire(score.to_wire()) == score
