"""Is this user still a customer? The BG/NBD model (Fader, Hardie and Lee,
"Counting your customers the easy way", 2005) read from the profile: pure,
no fitting here (``bench/churn.py --fit`` fits the four parameters on a
file; docs/timing.md).

Inputs per user, in days, counted in purchase *occasions* (triggers.cycle):
``x`` repeat occasions (the intervals seen), ``t_x`` the time from the first
to the newest purchase, ``T`` the time from the first purchase to now. The
probability that the user is still active is

    P(alive) = 1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))

A user with no repeat occasion is 1 in this model (it cannot tell a one-off
buyer who left from one who will come back), so the tags read a second
figure: the probability of buying again within ``horizon`` days,

    P(active) = P(alive) * (1 - ((alpha + T) / (alpha + T + horizon)) ** (r + x))

(a user still alive buys at a rate with posterior Gamma(r + x, alpha + T), and
drops out only right after a purchase, so the first purchase of the horizon
comes if alive and the Poisson clock ticks once). A user who never bought
has no figure (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from triggers.cycle import as_cycle
from triggers.profile import Profile

DAY_MS = 86_400_000
# The tags the model gives (strategies.tags): derived, and sticky.
CHURN_RISK_HIGH = "churn_risk_high"
CHURNED = "churned"


@dataclass(frozen=True, slots=True)
class BgNbd:
    """The population's parameters, time in days. The defaults are the
    published CDNOW fit (r 0.243, alpha 4.414 weeks, a 0.793, b 2.426)."""

    r: float = 0.243
    alpha: float = 30.898
    a: float = 0.793
    b: float = 2.426

    def p_alive(self, x: int, t_x: float, T: float) -> float:  # noqa: N803 (the paper's names)
        if x <= 0:
            return 1.0
        log_ratio = (self.r + x) * (math.log(self.alpha + T) - math.log(self.alpha + t_x))
        odds = math.log(self.a) - math.log(self.b + x - 1) + log_ratio
        return 1.0 / (1.0 + math.exp(min(odds, 700.0)))

    def p_active(self, x: int, t_x: float, T: float, horizon: float) -> float:  # noqa: N803
        """The probability of a purchase within ``horizon`` days after ``T``."""
        silent = math.exp((self.r + x) * (math.log(self.alpha + T)
                                          - math.log(self.alpha + T + horizon)))
        return self.p_alive(x, t_x, T) * (1.0 - silent)

    def log_likelihood(self, x: int, t_x: float, T: float) -> float:  # noqa: N803
        """One user's log-likelihood (the fit maximises the sum)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        a1 = math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha)
        a2 = math.lgamma(a + b) + math.lgamma(b + x) - math.lgamma(b) - math.lgamma(a + b + x)
        a3 = -(r + x) * math.log(alpha + T)
        if x <= 0:
            return a1 + a2 + a3
        a4 = math.log(a) - math.log(b + x - 1) - (r + x) * math.log(alpha + t_x)
        top = max(a3, a4)
        return a1 + a2 + top + math.log(math.exp(a3 - top) + math.exp(a4 - top))


def rfm(profile: Profile, now_ms: int) -> tuple[int, float, float] | None:
    """``(x, t_x, T)`` in days at ``now_ms``; None for a user who never bought."""
    first, last = profile.first_purchase_ts, profile.last_purchase_ts
    if first is None or last is None:
        return None
    cycle = as_cycle(profile.cycle)
    x = cycle.intervals if cycle is not None else 0
    return x, (last - first) / DAY_MS, max(now_ms - first, last - first) / DAY_MS


def p_alive(profile: Profile, model: BgNbd, now_ms: int) -> float | None:
    found = rfm(profile, now_ms)
    return None if found is None else model.p_alive(*found)


def p_active(profile: Profile, model: BgNbd, now_ms: int, horizon_days: float) -> float | None:
    found = rfm(profile, now_ms)
    return None if found is None else model.p_active(*found, horizon_days)


def next_purchase_ms(profile: Profile) -> int | None:
    """The expected next purchase: the newest one plus the mean interval of
    the purchase cycle (None without an interval)."""
    cycle = as_cycle(profile.cycle)
    last = profile.last_purchase_ts
    return None if cycle is None or last is None else last + cycle.mean_ms
