"""Intervals that respect users (issue 24.1): a known effect, users with
repeated units whose conversions are correlated (a user's propensity is shared
by all their units), 200 seeded draws through the Attributor; the clustered
per-unit interval and the per-user interval must cover the true uplift in at
least 93 % of them. The old per-unit Newcombe interval, which takes units as
independent, is measured on the same draws for contrast."""

from __future__ import annotations

import math
import random
from itertools import product

from strategies.attribution import Attributor
from strategies.intervals import clustered_interval, clustered_variance
from tests.strategies.helpers import DAY, T0

Z = 1.959963984540054
DRAWS = 200
USERS = 400
EFFECT = 0.05
# A user's propensity: most rarely buy, some often; units per user 1..6,
# drawn independently of the propensity, so the per-unit true uplift is EFFECT.
PROPENSITY = ((0.03, 0.7), (0.5, 0.3))
UNITS = range(1, 7)


def _true_per_user_uplift() -> float:
    """P(a user with m units converts at least once), treated minus control,
    averaged over the propensity mix and m uniform on 1..6 (exact)."""
    total = 0.0
    for (p, weight), m in product(PROPENSITY, UNITS):
        total += weight / len(UNITS) * ((1 - (1 - p - EFFECT) ** m) - (1 - (1 - p) ** m))
    return total


def _draw(seed: int) -> Attributor:
    rng = random.Random(seed)
    att = Attributor(window_ms=DAY)
    for i in range(USERS):
        user = f"u{i}"
        control = rng.random() < 0.5
        base = PROPENSITY[0][0] if rng.random() < PROPENSITY[0][1] else PROPENSITY[1][0]
        rate = base if control else base + EFFECT
        for k in range(rng.choice(UNITS)):
            ts = T0 + k * 3 * DAY  # units a window apart: each purchase converts one
            att.unit("scene", "s", "-", user, ts, control)
            if rng.random() < rate:
                att.purchase(user, ts + 1, 10.0)
    return att


def test_clustered_interval_formula_against_hand_computed_values() -> None:
    # treated users (units, converted): (2, 1), (1, 0), (3, 3); control (1, 0), (2, 0)
    t = [(2, 1), (1, 0), (3, 3)]
    c = [(1, 0), (2, 0)]
    pt = 4 / 6
    vt = 3 / 2 * ((1 - 2 * pt) ** 2 + (0 - pt) ** 2 + (3 - 3 * pt) ** 2) / 36
    got = clustered_variance(t)
    assert got is not None and math.isclose(got[0], pt) and math.isclose(got[1], vt)
    ci = clustered_interval(t, c)
    assert ci is not None
    assert math.isclose(ci[0], pt - Z * math.sqrt(vt)) and math.isclose(ci[1], pt + Z * math.sqrt(vt))
    # one unit per user: the Wald interval times sqrt(k / (k - 1))
    ones_t = [(1, 1)] * 30 + [(1, 0)] * 70
    ones_c = [(1, 1)] * 20 + [(1, 0)] * 80
    se = math.sqrt(0.3 * 0.7 / 100 * 100 / 99 + 0.2 * 0.8 / 100 * 100 / 99)
    ci = clustered_interval(ones_t, ones_c)
    assert ci is not None and math.isclose(ci[0], 0.1 - Z * se) and math.isclose(ci[1], 0.1 + Z * se)
    assert clustered_interval([(3, 1)], c) is None  # one user: no variance


def test_coverage_over_200_draws_with_repeated_units_per_user() -> None:
    true_user = _true_per_user_uplift()
    clustered = per_user = old = 0
    for seed in range(DRAWS):
        (row,) = _draw(seed).rows()
        assert row.units[0] + row.units[1] > USERS  # units repeat per user
        ci = row.clustered_ci()
        assert ci is not None
        clustered += ci[0] <= EFFECT <= ci[1]
        up = row.uplift_per_user()
        assert up.low is not None and up.high is not None
        per_user += up.low <= true_user <= up.high
        unit = row.uplift()
        assert unit.low is not None and unit.high is not None
        old += unit.low <= EFFECT <= unit.high
    figures = {"clustered per unit": clustered / DRAWS, "per user": per_user / DRAWS,
               "old per unit (independent units)": old / DRAWS}
    print(f"coverage of 95 % intervals over {DRAWS} draws: {figures}")
    assert clustered / DRAWS >= 0.93
    assert per_user / DRAWS >= 0.93
    # The contrast the issue is about: units taken as independent under-cover.
    assert old < clustered
