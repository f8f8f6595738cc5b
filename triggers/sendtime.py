"""Send-time optimisation, sans-I/O: each user's engagement by hour of the
week, and the hour a message is held to (docs/timing.md, "Send-time
optimisation").

The curve lives in the profile (:class:`triggers.profile.Profile`,
``engagement``) and is updated online by the events that show the user is
there: ``opened`` and ``clicked`` (feedback), ``purchase``, and a *visit*,
the first shopper event after 30 minutes of silence. Buckets are local hours
of the week in the user's zone as the events name it (the profile's ``tz``,
else UTC): ``(local ms // 1h) % 168``, index 0 is Thursday 00:00 (the
epoch's weekday). Local, so a habit of 20:00 stays at 20:00 across a
daylight-saving change, and users of a group pool their curves as they are.

Each bucket keeps ``[weight, events, ts]``: its weight in thousandths as of
``ts`` (decayed with :data:`HALF_LIFE_MS` before an event is added, so one
update touches one bucket) and how many events it has seen. Integers only,
so replay (live objects) and the worker (encoded state) hold the same curve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

HOUR_MS = 3_600_000
WEEK_HOURS = 168
HALF_LIFE_MS = 28 * 86_400_000  # an engagement a month ago counts half
VISIT_GAP_MS = 30 * 60_000  # a shopper event after this much silence is a new visit
VISIT = "visit"
# Weights in thousandths: an open is the signal the curve is for; a click or
# a purchase says more; a visit says the user is around, not that they read.
WEIGHTS: Mapping[str, int] = {"opened": 1000, "clicked": 2000, "purchase": 2000, VISIT: 500}
_NOT_VISITS = frozenset({"opened", "clicked", "purchase", "delivered", "failed", "shared",
                         "converted", "identify"})
_MAX_EVENTS = 1 << 30

Curve = dict[int, list[int]]  # local hour of week -> [weight (1/1000), events, ts]


def engagement_kind(etype: str, ts: int, previous_ts: int | None) -> str | None:
    """What the event counts as on the curve (None: nothing). ``previous_ts``:
    the user's newest event before this one."""
    if etype in WEIGHTS:
        return etype
    if etype in _NOT_VISITS:
        return None
    if previous_ts is None or ts - previous_ts >= VISIT_GAP_MS:
        return VISIT
    return None


def offset_ms(ts: int, zone: ZoneInfo | None) -> int:
    """``zone``'s offset east of UTC at ``ts`` (0: None, or no date there)."""
    if zone is None:
        return 0
    try:
        offset = datetime.fromtimestamp(ts / 1000, UTC).astimezone(zone).utcoffset()
    except (ValueError, OverflowError, OSError):
        return 0
    return 0 if offset is None else int(offset.total_seconds() * 1000)


def hour_of_week(ts: int, zone: ZoneInfo | None = None) -> int:
    """The local hour of the week of ``ts`` in ``zone`` (None: UTC)."""
    return ((ts + offset_ms(ts, zone)) // HOUR_MS) % WEEK_HOURS


def decayed(weight: float, age_ms: int) -> float:
    """``weight`` after ``age_ms`` (a negative age: an older event, no growth)."""
    return float(weight * 2.0 ** (-max(0, age_ms) / HALF_LIFE_MS))


def observe(curve: Curve, kind: str, ts: int, zone: ZoneInfo | None = None) -> None:
    """Add one engagement at ``ts`` (local hours of ``zone``), in place (the
    profile owns the dict)."""
    slot = hour_of_week(ts, zone)
    cell = curve.get(slot)
    if cell is None:
        curve[slot] = [WEIGHTS[kind], 1, ts]
        return
    weight, events, then = cell
    if ts >= then:
        curve[slot] = [round(decayed(weight, ts - then)) + WEIGHTS[kind],
                       min(events + 1, _MAX_EVENTS), ts]
    else:  # a late event: decayed to the bucket's time
        curve[slot] = [weight + round(decayed(WEIGHTS[kind], then - ts)),
                       min(events + 1, _MAX_EVENTS), then]


def curve_wire(curve: Mapping[int, list[int]]) -> list[list[int]]:
    """The stored form: ``[[hour of week, weight, events, ts], ...]`` by hour
    (JSON objects have string keys only)."""
    return [[slot, *curve[slot]] for slot in sorted(curve)]


def valid_curve(value: object) -> Curve:
    """A stored curve, or empty when it is not one (older or damaged state)."""
    if not isinstance(value, list):
        return {}
    out: Curve = {}
    for row in value:
        if not (isinstance(row, list) and len(row) == 4 and all(type(v) is int for v in row)
                and 0 <= row[0] < WEEK_HOURS and row[1] >= 0 and row[2] >= 0):
            return {}
        out[row[0]] = row[1:]
    return out


def merge_curves(a: Mapping[int, list[int]], b: Mapping[int, list[int]]) -> Curve:
    """Two users' curves as one (an identity merge): weights decayed to the
    newer time of each hour and added."""
    out: Curve = {slot: list(cell) for slot, cell in a.items()}
    for slot, (weight, events, then) in b.items():
        mine = out.get(slot)
        if mine is None:
            out[slot] = [weight, events, then]
            continue
        newest = max(then, mine[2])
        out[slot] = [round(decayed(mine[0], newest - mine[2]) + decayed(weight, newest - then)),
                     min(mine[1] + events, _MAX_EVENTS), newest]
    return out


def weights_at(curve: Mapping[int, list[int]], now_ms: int) -> list[float]:
    """The 168 hourly weights as of ``now_ms`` (in events' units, not thousandths)."""
    out = [0.0] * WEEK_HOURS
    for slot, (weight, _events, then) in curve.items():
        out[slot] = decayed(weight, now_ms - then) / 1000.0
    return out


def events_by_hour(curve: Mapping[int, list[int]]) -> list[int]:
    """Events seen per local hour of the day (all weekdays)."""
    out = [0] * 24
    for slot, cell in curve.items():
        out[slot % 24] += cell[1]
    return out


@dataclass(frozen=True, slots=True)
class Rules:
    """When a curve is trusted and when its peak is worth a wait."""

    min_events: int = 5  # fewer: borrow the group's curve
    peak_ratio: float = 1.5  # the best hour's score over the mean hour's, at least


@dataclass(frozen=True, slots=True)
class Choice:
    """Where a plan lands: ``due_ms`` None means at once."""

    due_ms: int | None
    hour_ms: int  # start of the best hour (epoch ms)
    events: int  # the events behind that hour of the day (0: borrowed)
    reason: str  # "best", "now_best", "flat", "no_data", "window"


def score(weights: list[float], slot: int) -> float:
    """An hour's score: its hour of the week plus its hour of every day, so a
    few weeks of opens at 20:00 favour 20:00 on a weekday with none yet."""
    hour = slot % 24
    return weights[slot] + sum(weights[d * 24 + hour] for d in range(7))


def plan(weights: list[float], events: int, hourly: list[int], now_ms: int, until_ms: int,
         quiet: Callable[[int], bool], rules: Rules, zone: ZoneInfo | None = None) -> Choice:
    """The best start in ``[now_ms, until_ms]``: the start of the highest
    scoring local hour of ``zone`` (the curve's; ``now_ms`` for the current
    one) not in quiet hours (``quiet(ms)``), the earliest on a tie. At once
    when the curve has fewer than ``min_events`` events, when the best hour
    scores below ``peak_ratio`` times the mean hour (a flat curve), or when
    it is the current hour."""
    current = now_ms - (now_ms + offset_ms(now_ms, zone)) % HOUR_MS  # this local hour's start
    if events < rules.min_events:
        return Choice(None, current, 0, "no_data")
    mean = sum(score(weights, s) for s in range(WEEK_HOURS)) / WEEK_HOURS
    best_ms, best, best_slot = current, -1.0, 0
    start = current
    while start <= until_ms:
        at = max(start, now_ms)
        if not quiet(at):
            slot = hour_of_week(at, zone)
            value = score(weights, slot)
            if value > best:
                best_ms, best, best_slot = start, value, slot
        start += HOUR_MS
    if best < 0:  # every hour of the window is quiet: quiet hours decide
        return Choice(None, current, 0, "window")
    count = hourly[best_slot % 24]
    if mean <= 0 or best < rules.peak_ratio * mean:
        return Choice(None, best_ms, count, "flat")
    if best_ms <= now_ms:
        return Choice(None, best_ms, count, "now_best")
    return Choice(best_ms, best_ms, count, "best")


class GroupCurves:
    """Curves of a group (style/segment), in local hours of the week: a
    moving average of the normalised curves of the group's users with
    enough events, which a user with too few borrows. Kept by the delivery
    process (no I/O; rebuilt as it decides)."""

    def __init__(self, rate: float = 0.05) -> None:
        self.rate = rate
        self._curves: dict[str, list[float]] = {}
        self.members: dict[str, int] = {}  # requests that taught it (a user may teach twice)

    def learn(self, group: str, local: list[float]) -> None:
        total = sum(local)
        if total <= 0:
            return
        shape = [w / total for w in local]
        mine = self._curves.get(group)
        n = self.members.get(group, 0) + 1
        self.members[group] = n
        if mine is None:
            self._curves[group] = shape
            return
        # The plain mean for the first users, then a moving average that follows drift.
        rate = max(self.rate, 1.0 / n)
        self._curves[group] = [(1 - rate) * a + rate * b for a, b in zip(mine, shape, strict=True)]

    def curve(self, group: str) -> list[float] | None:
        return self._curves.get(group)
