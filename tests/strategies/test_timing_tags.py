"""Habit and churn tags from the profile (docs/timing.md): work-time,
purchase cycle, the BG/NBD churn model and its two tags, and the shipped
winback strategy enrolling a user the model tagged ``churned``."""

from __future__ import annotations

import math

import pytest

from config.content_models import ContentModel
from config.strategy_models import ChurnRulesModel, TagRulesModel
from strategies.actions import EnrolAction, UserContext
from strategies.tags import all_tags, replace_derived
from tests.strategies.helpers import engine
from triggers.churn import BgNbd, next_purchase_ms, p_active, p_alive, rfm
from triggers.events import event_from_mapping
from triggers.profile import Profile

DAY = 86_400_000
HOUR = 3_600_000
MONDAY = 4 * DAY  # 1970-01-05 was a Monday


def profile(*events: tuple[int, str]) -> Profile:
    p = Profile()
    for ts, etype in events:
        p.update(event_from_mapping({"user_id": "u", "ts": ts, "type": etype}))
    return p


def tags_of(p: Profile, now: int) -> frozenset[str]:
    return all_tags(p, ContentModel(), TagRulesModel(), now)


def test_worktime_for_weekday_office_hours_only() -> None:
    office = profile(*[(MONDAY + d * DAY + 10 * HOUR, "view") for d in range(5)])
    assert {"weekday", "worktime"} <= tags_of(office, MONDAY + 5 * DAY)
    evening = profile(*[(MONDAY + d * DAY + 20 * HOUR, "view") for d in range(5)])
    assert "worktime" not in tags_of(evening, MONDAY + 5 * DAY)
    assert "tod:evening" in tags_of(evening, MONDAY + 5 * DAY)


@pytest.mark.parametrize(("every_days", "tag"), [
    (7, "cycle:weekly"), (10, "cycle:weekly"), (11, "cycle:monthly"), (30, "cycle:monthly"),
    (90, "cycle:quarterly"), (200, "cycle:long")])
def test_cycle_tag_by_mean_interval(every_days: int, tag: str) -> None:
    p = profile(*[(d * every_days * DAY, "purchase") for d in range(3)])
    got = {t for t in tags_of(p, 2 * every_days * DAY) if t.startswith("cycle:")}
    assert got == {tag}


def test_no_cycle_tag_from_one_interval_or_an_irregular_history() -> None:
    one = profile((0, "purchase"), (7 * DAY, "purchase"))
    assert not any(t.startswith("cycle:") for t in tags_of(one, 7 * DAY))
    irregular = profile((0, "purchase"), (1 * DAY, "purchase"), (60 * DAY, "purchase"))
    assert not any(t.startswith("cycle:") for t in tags_of(irregular, 60 * DAY))


def test_p_alive_is_the_published_formula() -> None:
    model = BgNbd()
    x, t_x, big_t = 2, 20.0, 100.0
    expected = 1 / (1 + model.a / (model.b + x - 1)
                    * ((model.alpha + big_t) / (model.alpha + t_x)) ** (model.r + x))
    assert model.p_alive(x, t_x, big_t) == pytest.approx(expected, rel=1e-12)
    assert model.p_alive(0, 0.0, 500.0) == 1.0  # no repeat: the model cannot tell
    assert model.p_alive(2, 20.0, 30.0) > model.p_alive(2, 20.0, 300.0)


def test_p_active_is_p_alive_times_a_purchase_within_the_horizon() -> None:
    model = BgNbd()
    x, t_x, big_t, horizon = 3, 21.0, 60.0, 90.0
    silent = ((model.alpha + big_t) / (model.alpha + big_t + horizon)) ** (model.r + x)
    assert model.p_active(x, t_x, big_t, horizon) == pytest.approx(
        model.p_alive(x, t_x, big_t) * (1 - silent), rel=1e-12)
    # a one-off buyer: alive by the model, less and less likely to buy again
    assert model.p_active(0, 0.0, 30.0, horizon) > model.p_active(0, 0.0, 400.0, horizon)


def test_one_off_buyer_goes_at_risk_then_churned() -> None:
    p = profile((0, "purchase"))
    assert "churn_risk_high" in tags_of(p, 30 * DAY)  # most one-off buyers never return
    assert "churned" not in tags_of(p, 30 * DAY)
    assert "churned" in tags_of(p, 400 * DAY)


def test_likelihood_of_a_one_off_buyer_is_the_published_term() -> None:
    m = BgNbd(r=0.5, alpha=10.0, a=0.8, b=2.5)
    big_t = 40.0
    expected = (math.lgamma(m.r) - math.lgamma(m.r) + m.r * math.log(m.alpha)
                - m.r * math.log(m.alpha + big_t))  # a2 is 0 for x = 0
    assert m.log_likelihood(0, 0.0, big_t) == pytest.approx(expected)


def test_rfm_and_next_purchase_from_the_profile() -> None:
    p = profile((0, "purchase"), (10 * DAY, "purchase"), (10 * DAY + 5, "purchase"),
                (30 * DAY, "purchase"))
    assert rfm(p, 50 * DAY) == (2, 30.0, 50.0)
    assert next_purchase_ms(p) == 30 * DAY + (10 * DAY + 20 * DAY - 5) // 2
    assert p_alive(Profile(), BgNbd(), 0) is None


def test_churn_tags_cross_the_thresholds_and_churned_is_sticky() -> None:
    p = profile(*[(d * 7 * DAY, "purchase") for d in range(4)])
    assert not {"churn_risk_high", "churned"} & tags_of(p, 22 * DAY)
    rules = TagRulesModel()
    late = tags_of(p, 400 * DAY)
    active = p_active(p, rules.churn.model(), 400 * DAY, rules.churn.horizon_days)
    assert active is not None and active < rules.churn.churned_below
    assert {"churn_risk_high", "churned"} <= late
    _add, remove = replace_derived(late, tags_of(p, 22 * DAY))
    assert "churn_risk_high" in remove and "churned" not in remove


def test_thresholds_are_ordered() -> None:
    with pytest.raises(ValueError, match="churned_below"):
        ChurnRulesModel(risk_high_below=0.2, churned_below=0.5)


def test_a_churned_tag_enrols_in_the_shipped_winback() -> None:
    p = profile(*[(d * 7 * DAY, "purchase") for d in range(4)])
    now = 400 * DAY
    out = engine().on_user("u", UserContext(tags_of(p, now)), now)
    assert [(a.strategy, a.user_id) for a in out if isinstance(a, EnrolAction)] == [
        ("winback", "u")]
    fresh = engine().on_user("u", UserContext(tags_of(p, 22 * DAY)), 22 * DAY)
    assert not [a for a in fresh if isinstance(a, EnrolAction)]
