"""Intervals that respect users: a user with five triggers is one random draw,
not five, so the per-unit uplift gets an interval clustered by user.

A row's assignment is by the hash of (name, user), so all units of one user
sit in the same arm: the users are the independent clusters. The per-unit
rate of an arm is the ratio estimator ``p = sum(x_i) / sum(n_i)`` over its
users ``i`` (``n_i`` units, ``x_i`` of them converted); its variance is the
cluster-robust (sandwich) one with the CR1 small-sample factor:

    var(p) = k / (k - 1) * sum((x_i - p * n_i) ** 2) / (sum(n_i)) ** 2

over the arm's ``k`` users, and the uplift's 95 % interval is
``p_t - p_c +/- 1.96 * sqrt(var_t + var_c)``. With one unit per user it is the
Wald interval times ``sqrt(k / (k - 1))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Z95 = 1.959963984540054
METHOD = ("per unit: 95 % interval clustered by user (ratio estimator, cluster-robust "
          "CR1 variance, normal); per user: Newcombe hybrid score interval on users "
          "(a user converts if any of their units does)")


def clustered_variance(clusters: Iterable[tuple[int, int]]) -> tuple[float, float, int] | None:
    """(rate, variance of the rate, users) of ``(units, converted)`` per user;
    None with fewer than two users (no variance to estimate)."""
    pairs = [(n, x) for n, x in clusters if n > 0]
    k = len(pairs)
    if k < 2:
        return None
    total = sum(n for n, _ in pairs)
    p = sum(x for _, x in pairs) / total
    spread = sum((x - p * n) ** 2 for n, x in pairs)
    return p, k / (k - 1) * spread / (total * total), k


def clustered_interval(treated: Iterable[tuple[int, int]], control: Iterable[tuple[int, int]],
                       z: float = Z95) -> tuple[float, float] | None:
    """95 % interval of the per-unit uplift, clustered by user (None when an
    arm has fewer than two users)."""
    t = clustered_variance(treated)
    c = clustered_variance(control)
    if t is None or c is None:
        return None
    half = z * math.sqrt(t[1] + c[1])
    d = t[0] - c[0]
    return d - half, d + half
