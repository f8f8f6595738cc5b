"""Control groups (share on 100k users within a binomial bound) and uplift
recovery on synthetic streams with a known effect."""

from __future__ import annotations

import math
import random

import pytest

from config.strategy_models import ControlModel
from strategies.attribution import (
    Attributor,
    in_control,
    newcombe_interval,
    wald_interval,
    wilson_interval,
)
from tests.strategies.helpers import DAY, HOUR, T0

N = 100_000


@pytest.mark.parametrize(("share", "name"), [(0.1, "reactivation"), (0.25, "cart_abandonment"),
                                             (0.05, "promo_arrival")])
def test_control_share_on_100k_users_is_within_a_binomial_bound(share: float, name: str) -> None:
    control = ControlModel(share=share)
    hits = sum(in_control(control, name, str(500_000_000 + i)) for i in range(N))
    sd = math.sqrt(N * share * (1 - share))
    assert abs(hits - N * share) <= 5 * sd  # fails with probability < 1e-6 for a fair hash


def test_control_is_deterministic_and_independent_across_names() -> None:
    control = ControlModel(share=0.2, per={"b": 0.5})
    users = [f"user-{i}" for i in range(20_000)]
    a = [in_control(control, "a", u) for u in users]
    assert a == [in_control(control, "a", u) for u in users]
    b = [in_control(control, "b", u) for u in users]
    both = sum(x and y for x, y in zip(a, b, strict=True))
    n = len(users)
    expected = n * 0.2 * 0.5  # independent hashes: overlap = product of shares
    assert abs(both - expected) <= 5 * math.sqrt(n * 0.1 * 0.9)
    assert abs(sum(b) - n * 0.5) <= 5 * math.sqrt(n * 0.25)
    assert not any(in_control(ControlModel(share=0.0), "a", u) for u in users)


def test_interval_formulas_against_hand_computed_values() -> None:
    # Newcombe (1998) table II example: 56/70 vs 48/80 -> 0.2, [0.0524, 0.3339]
    low, high = newcombe_interval(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    wlow, whigh = wald_interval(56, 70, 48, 80)
    se = math.sqrt(0.8 * 0.2 / 70 + 0.6 * 0.4 / 80)
    assert math.isclose(wlow, 0.2 - 1.959963984540054 * se)
    assert math.isclose(whigh, 0.2 + 1.959963984540054 * se)
    wl, wh = wilson_interval(0, 10)
    assert wl == 0.0 and 0 < wh < 0.35


def synthetic(seed: int, users: int, base: float, effect: float,
              control: ControlModel) -> Attributor:
    """One trigger per user; treated users convert with base+effect, control
    with base, within the window; some purchases fall outside it."""
    rng = random.Random(seed)
    att = Attributor(window_ms=DAY)
    events: list[tuple[int, int, str, bool]] = []
    for i in range(users):
        user = f"s{seed}-{i}"
        ts = T0 + rng.randrange(0, 10 * DAY)
        is_control = in_control(control, "promo", user)
        events.append((ts, 0, user, is_control))
        if rng.random() < base + (0.0 if is_control else effect):
            events.append((ts + rng.randrange(1, DAY), 1, user, is_control))
        if rng.random() < 0.3:  # unrelated purchases long after the window
            events.append((ts + DAY + rng.randrange(HOUR, 5 * DAY), 1, user, is_control))
    for ts, kind, user, is_control in sorted(events):
        if kind == 0:
            att.unit("scene", "promo", "-", user, ts, is_control)
        else:
            att.purchase(user, ts, 10.0)
    return att


def test_uplift_on_a_synthetic_stream_recovers_the_known_effect() -> None:
    control = ControlModel(share=0.2)
    effect = 0.03
    covered = 0
    runs = 20
    for seed in range(runs):
        row = synthetic(seed, 6_000, 0.05, effect, control).rows()[0]
        up = row.uplift()
        assert up.low is not None and up.high is not None and up.diff is not None
        covered += up.low <= effect <= up.high
        assert up.wald_low is not None
    # a 95% interval covers the true effect in ~19 of 20 runs; < 16 has p < 0.003
    assert covered >= 16
    big = synthetic(99, 60_000, 0.05, effect, control).rows()[0]
    up = big.uplift()
    assert up.low is not None and up.high is not None and up.diff is not None
    assert up.low <= effect <= up.high
    assert up.low > 0  # the effect is detected
    assert abs(up.diff - effect) < 0.01


def test_no_effect_gives_an_interval_around_zero() -> None:
    row = synthetic(7, 40_000, 0.05, 0.0, ControlModel(share=0.5)).rows()[0]
    up = row.uplift()
    assert up.low is not None and up.high is not None
    assert up.low <= 0.0 <= up.high


def test_attribution_window_and_revenue_go_to_the_latest_unit() -> None:
    att = Attributor(window_ms=DAY)
    att.unit("scene", "s", "-", "u", T0, False)
    att.unit("scene", "s", "-", "u", T0 + HOUR, False)
    att.unit("strategy", "j", "v1", "u", T0 + 2 * HOUR, True)
    att.purchase("u", T0 + 2 * HOUR, 5.0)  # at the strategy's own time: not after it
    att.purchase("u", T0 + DAY + 30 * 60_000, 7.5)  # after the 1st scene unit's window
    rows = {(r.kind, r.name): r for r in att.rows()}
    scene, strat = rows[("scene", "s")], rows[("strategy", "j")]
    assert scene.converted == [2, 0] and scene.units == [2, 0]
    assert scene.revenue == [12.5, 0.0]  # one purchase credited once per scene
    assert strat.converted == [0, 1] and strat.revenue == [0.0, 7.5]


def test_feedback_on_another_users_message_counts_nothing() -> None:
    # A share (or open) naming bob's message under ann's id is not bob's act,
    # nor ann's: ann never got that message.
    att = Attributor(window_ms=DAY)
    att.unit("scene", "s", "-", "bob", T0, False)
    att.sent("scene", "s", "-", "bob", "m-bob")
    for kind in ("shared", "opened"):
        att.feedback("ann", kind, {"message_id": "m-bob", "scene": "s"})
    (row,) = att.rows()
    assert row.feedback == {}
    att.feedback("bob", "shared", {"message_id": "m-bob", "scene": "s"})
    att.feedback("bob", "shared", {"message_id": "m-bob", "scene": "s"})  # once per message
    assert row.feedback == {"shared": 1}
