"""A user's purchase cycle: the interval between purchase occasions, overall
and per category, with how sure the estimate is (docs/timing.md).

Pure and bounded: a purchase updates the profile's statistics in place, the
estimate is read back without I/O. Purchases up to ``OCCASION_GAP_MS``
after the newest earlier one are the same occasion (one order is often
several purchase events) and make no interval; a purchase older than the
newest one (late) makes none either, so the statistics depend only on the
events in the order a user's partition delivers them.

Statistics are ``[n, recent]``: how many intervals were seen (saturating at
``MAX_COUNT``) and the newest ``MAX_INTERVALS`` of them in ms. The estimate
is their mean in whole ms (floor) and their population standard deviation;
everything a scene compares is exact integer arithmetic, so replay, the
worker and the reference model agree to the millisecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

OCCASION_GAP_MS = 3_600_000  # purchases within an hour are one occasion
MAX_INTERVALS = 8  # the newest intervals kept (a changed habit shows within 8 purchases)
MAX_COUNT = 1_000_000
MAX_CATEGORIES = 8  # per-category statistics kept (the least recently bought go)

Stats = list[Any]  # [n, [interval_ms, ...]]
CategoryStats = list[Any]  # [last_ts, n, [interval_ms, ...]]


@dataclass(frozen=True, slots=True)
class Cycle:
    """One estimate: ``intervals`` seen in all, and from the newest ``recent``
    of them the mean (whole ms) and the standard deviation (ms)."""

    intervals: int
    recent: tuple[int, ...]

    @property
    def mean_ms(self) -> int:
        return sum(self.recent) // len(self.recent)

    @property
    def sd_ms(self) -> float:
        return math.sqrt(self._var_n2()) / len(self.recent)

    @property
    def spread(self) -> float:
        """Coefficient of variation (sd / mean): 0 = like clockwork."""
        total = sum(self.recent)
        return math.sqrt(self._var_n2()) / total if total > 0 else math.inf

    def spread_at_most(self, limit: float) -> bool:
        """``spread <= limit``, exactly (no float rounding at the boundary)."""
        total = sum(self.recent)
        if total <= 0:
            return False
        return Fraction(self._var_n2(), total * total) <= Fraction(limit) ** 2

    def _var_n2(self) -> int:
        """Population variance times n squared: n * sum(x^2) - sum(x)^2."""
        n = len(self.recent)
        return n * sum(x * x for x in self.recent) - sum(self.recent) ** 2


def add_interval(stats: Stats | None, interval_ms: int) -> Stats:
    """``stats`` with one more interval (a fresh list when None)."""
    if stats is None:
        return [1, [interval_ms]]
    n, recent = stats
    return [min(n + 1, MAX_COUNT), [*recent[-(MAX_INTERVALS - 1):], interval_ms]]


def as_cycle(stats: Stats | None) -> Cycle | None:
    if not stats or not stats[1]:
        return None
    return Cycle(int(stats[0]), tuple(stats[1]))


def record_purchase(cycle: Stats | None, last_ts: int | None, ts: int) -> Stats | None:
    """The overall statistics after a purchase at ``ts`` (``last_ts``: the
    newest purchase before it)."""
    if last_ts is not None and ts > last_ts + OCCASION_GAP_MS:
        return add_interval(cycle, ts - last_ts)
    return cycle


def record_category(cats: dict[str, CategoryStats], category: str, ts: int) -> None:
    """Update one category's statistics in ``cats`` (capped, in place)."""
    entry = cats.get(category)
    if entry is None:
        if len(cats) >= MAX_CATEGORIES:
            oldest = min(cats, key=lambda c: (cats[c][0], c))
            del cats[oldest]
        cats[category] = [ts, 0, []]
        return
    last = entry[0]
    if ts > last + OCCASION_GAP_MS:
        cats[category] = [ts, *add_interval(entry[1:] if entry[1] else None, ts - last)]
    elif ts > last:
        entry[0] = ts


def category_cycle(cats: dict[str, CategoryStats], category: str) -> tuple[int, Cycle] | None:
    """The category's newest purchase and its cycle (None: no interval yet)."""
    entry = cats.get(category)
    if entry is None:
        return None
    cycle = as_cycle(entry[1:])
    return None if cycle is None else (entry[0], cycle)


def _is_int(value: Any) -> bool:
    return type(value) is int


def valid_stats(value: Any) -> Stats | None:
    """Stats read from stored state (None when absent or malformed)."""
    if (isinstance(value, list) and len(value) == 2 and _is_int(value[0])
            and isinstance(value[1], list) and 0 < len(value[1]) <= MAX_INTERVALS
            and all(_is_int(v) and v > 0 for v in value[1])):
        return [value[0], list(value[1])]
    return None


def valid_categories(value: Any) -> dict[str, CategoryStats]:
    if not isinstance(value, dict):
        return {}
    cats: dict[str, CategoryStats] = {}
    for category, entry in list(value.items())[:MAX_CATEGORIES]:
        if not (isinstance(entry, list) and len(entry) == 3 and _is_int(entry[0])):
            continue
        stats = valid_stats(entry[1:])
        cats[category] = [entry[0], *stats] if stats is not None else [entry[0], 0, []]
    return cats
