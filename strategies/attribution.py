"""Attribution and uplift: who was exposed, who converted, what it earned.

A *unit* is one scene trigger or one strategy enrolment, assigned to the
treated or control group by :mod:`channels.policy.control` (the hash of name and
user). A purchase by the same user with ``unit.ts < purchase.ts <= unit.ts +
window`` converts every such unit (once each); its revenue (the price) goes to
the latest such unit of each scene/strategy, so one purchase is never counted
twice for the same scene. Uplift compares conversion rates of all units
assigned to treatment (intention to treat: caps and quiet hours do not move a
unit out of its group) against control. Units of one user are not
independent (the user is what the hash assigns), so the per-unit uplift's
interval is clustered by user (:mod:`strategies.intervals`), and a per-user
uplift (a user converts if any of their units does) is given beside it with
Newcombe's interval on users. The old per-unit Newcombe and Wald intervals,
which treat units as independent, stay in the JSON for comparison.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channels.policy.control import bucket, in_control, share_for
from strategies.intervals import clustered_interval
from strategies.model import Goal

__all__ = [
    "Attributor",
    "Funnel",
    "Uplift",
    "bucket",
    "in_control",
    "newcombe_interval",
    "share_for",
    "wald_interval",
    "wilson_interval",
]

Z95 = 1.959963984540054
FEEDBACK = ("delivered", "opened", "clicked", "shared")


@dataclass(frozen=True, slots=True)
class Uplift:
    rate_treated: float | None
    rate_control: float | None
    diff: float | None
    low: float | None  # Newcombe 95%
    high: float | None
    wald_low: float | None
    wald_high: float | None


def wilson_interval(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wald_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p1 - p2 - z * se, p1 - p2 + z * se


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of p1 - p2 (Newcombe 1998, method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def uplift(x_t: int, n_t: int, x_c: int, n_c: int) -> Uplift:
    rt = x_t / n_t if n_t else None
    rc = x_c / n_c if n_c else None
    if not n_t or not n_c:
        return Uplift(rt, rc, None, None, None, None, None)
    low, high = newcombe_interval(x_t, n_t, x_c, n_c)
    wlow, whigh = wald_interval(x_t, n_t, x_c, n_c)
    return Uplift(rt, rc, x_t / n_t - x_c / n_c, low, high, wlow, whigh)


Split = tuple[tuple[str, str], ...]


@dataclass
class Funnel:
    """Counters of one (kind, name, variant) row; ``split`` (``report --by``)
    names the segment/style this row counts, e.g. ``(("segment", "loyal"),)``."""

    kind: str
    name: str
    variant: str
    split: tuple[tuple[str, str], ...] = ()
    triggered: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    units: list[int] = field(default_factory=lambda: [0, 0])  # [treated, control]
    converted: list[int] = field(default_factory=lambda: [0, 0])
    revenue: list[float] = field(default_factory=lambda: [0.0, 0.0])
    sent: int = 0
    feedback: Counter[str] = field(default_factory=Counter)
    goal_exits: Counter[str] = field(default_factory=Counter)  # step id -> users who left
    # Per arm: user -> [units, converted units] (the clusters of the interval).
    users: tuple[dict[str, list[int]], dict[str, list[int]]] = field(
        default_factory=lambda: ({}, {}))

    def uplift(self) -> Uplift:
        """Per unit, units taken as independent (Newcombe, Wald)."""
        return uplift(self.converted[0], self.units[0], self.converted[1], self.units[1])

    def users_converted(self, group: int) -> int:
        return sum(1 for _n, x in self.users[group].values() if x)

    def uplift_per_user(self) -> Uplift:
        """Per user: a user converts if any of their units converted."""
        return uplift(self.users_converted(0), len(self.users[0]),
                      self.users_converted(1), len(self.users[1]))

    def clustered_ci(self) -> tuple[float, float] | None:
        """The per-unit uplift's 95 % interval, clustered by user."""
        return clustered_interval(((n, x) for n, x in self.users[0].values()),
                                  ((n, x) for n, x in self.users[1].values()))

    def to_dict(self) -> dict[str, Any]:
        up = self.uplift()
        per_user = self.uplift_per_user()
        clustered = self.clustered_ci()
        return {
            "kind": self.kind, "name": self.name, "variant": self.variant, **dict(self.split),
            "triggered": self.triggered, "suppressed": dict(self.suppressed),
            "treated": self.units[0], "control": self.units[1], "sent": self.sent,
            **{k: self.feedback.get(k, 0) for k in FEEDBACK},
            "converted": sum(self.converted), "converted_treated": self.converted[0],
            "converted_control": self.converted[1],
            "revenue": round(sum(self.revenue), 2), "revenue_treated": round(self.revenue[0], 2),
            "revenue_control": round(self.revenue[1], 2),
            "cr_treated": up.rate_treated, "cr_control": up.rate_control, "uplift": up.diff,
            "uplift_ci95": [up.low, up.high] if up.low is not None else None,
            "uplift_ci95_wald": [up.wald_low, up.wald_high] if up.wald_low is not None else None,
            "uplift_ci95_clustered": list(clustered) if clustered is not None else None,
            "users_treated": len(self.users[0]), "users_control": len(self.users[1]),
            "users_converted_treated": self.users_converted(0),
            "users_converted_control": self.users_converted(1),
            "uplift_per_user": per_user.diff,
            "uplift_per_user_ci95": ([per_user.low, per_user.high]
                                     if per_user.low is not None else None),
            "goal_exits": dict(self.goal_exits),
        }


# (kind, name, user, the unit's ts): told of each unit's conversion (step funnels)
Converted = Callable[[str, str, str, int], None]


@dataclass
class _Unit:
    funnel: Funnel
    group: int  # 0 treated, 1 control
    ts: int
    tally: list[int]  # the user's [units, converted] in this row and arm
    converted: bool = False
    goal: Goal | None = None  # converts on its goal, not a purchase in the window
    user_id: str = ""

    def convert(self, hook: Converted | None) -> None:
        if not self.converted:
            self.converted = True
            self.funnel.converted[self.group] += 1
            self.tally[1] += 1
            if hook is not None:
                hook(self.funnel.kind, self.funnel.name, self.user_id, self.ts)



class Attributor:
    """Feed units, purchases and feedback in time order; read the funnels."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.funnels: dict[tuple[str, str, str, Split], Funnel] = {}
        self._open: dict[str, list[_Unit]] = defaultdict(list)  # user -> units in window
        self._goals: dict[str, list[_Unit]] = defaultdict(list)  # user -> units with a goal
        self._by_message: dict[str, _Unit] = {}
        self._latest: dict[tuple[str, str, str], _Unit] = {}  # (user, kind, name) -> unit
        self._seen_feedback: set[tuple[str, str]] = set()
        self.on_convert: Converted | None = None

    def funnel(self, kind: str, name: str, variant: str, split: Split = ()) -> Funnel:
        key = (kind, name, variant, split)
        row = self.funnels.get(key)
        if row is None:
            row = self.funnels[key] = Funnel(kind, name, variant, split)
        return row

    def triggered(self, kind: str, name: str, variant: str, n: int = 1,
                  split: Split = ()) -> None:
        self.funnel(kind, name, variant, split).triggered += n

    def suppressed(self, kind: str, name: str, variant: str, reason: str,
                   split: Split = ()) -> None:
        self.funnel(kind, name, variant, split).suppressed[reason] += 1

    def unit(self, kind: str, name: str, variant: str, user_id: str, ts: int,
             control: bool, split: Split = (), goal: Goal | None = None) -> None:
        row = self.funnel(kind, name, variant, split)
        group = 1 if control else 0
        row.units[group] += 1
        tally = row.users[group].setdefault(user_id, [0, 0])
        tally[0] += 1
        unit = _Unit(row, group, ts, tally, goal=goal, user_id=user_id)
        (self._open if goal is None else self._goals)[user_id].append(unit)
        self._latest[(user_id, kind, name)] = unit

    def goal_event(self, user_id: str, ts: int, fields: Any, price: float) -> None:
        """Units with a goal convert on it, within the goal's own window
        (the attribution window follows the goal); a purchase that meets the
        goal is its revenue."""
        units = self._goals.get(user_id)
        if not units:
            return
        live = [u for u in units if u.goal is not None and ts - u.ts <= u.goal.within_ms]
        self._goals[user_id] = live
        for unit in live:
            if unit.goal is not None and unit.goal.met(fields, unit.ts, ts):
                unit.convert(self.on_convert)
                unit.funnel.revenue[unit.group] += price if fields.get("type") == "purchase" \
                    else 0.0

    def goal_exit(self, kind: str, name: str, variant: str, step: str) -> None:
        self.funnel(kind, name, variant).goal_exits[step] += 1

    def sent(self, kind: str, name: str, variant: str, user_id: str, message_id: str,
             split: Split = ()) -> None:
        row = self.funnel(kind, name, variant, split)
        row.sent += 1
        unit = self._latest.get((user_id, kind, name))
        if unit is not None:
            self._by_message[message_id] = unit

    def feedback(self, user_id: str, kind: str, fields: Any) -> None:
        """Count a delivered/opened/clicked/shared event against its unit:
        by ``message_id`` when known, else the user's latest unit of the
        named ``strategy`` or ``scene``. Duplicates of one message count once;
        an event naming a message sent to someone else counts nothing."""
        message_id = fields.get("message_id")
        unit = self._by_message.get(message_id) if isinstance(message_id, str) else None
        if unit is not None and unit.user_id != user_id:
            return  # another user's message: feedback is only ever about one's own
        if unit is None:
            for key_kind in ("strategy", "scene"):
                name = fields.get(key_kind)
                if isinstance(name, str):
                    unit = self._latest.get((user_id, key_kind, name))
                    break
        if unit is None:
            return
        dedupe = (f"{message_id or id(unit)}|{user_id}", kind)
        if dedupe in self._seen_feedback:
            return
        self._seen_feedback.add(dedupe)
        unit.funnel.feedback[kind] += 1

    def slot_feedback(self, user_id: str, ts: int, kind: str, fields: Any) -> None:
        """An on-site slot's event (``fields`` name its ``slot``): each
        impression (``delivered``) is a unit of the slot's row for its
        variant, converted by a purchase in the window like a message's; the
        impression's clicks count on it (by its id, once each)."""
        slot, mid = fields.get("slot"), fields.get("message_id")
        if not isinstance(slot, str) or not isinstance(mid, str):
            return
        if kind == "delivered" and mid not in self._by_message:
            variant = str(fields.get("variant") or "-")
            self.unit("slot", slot, variant, user_id, ts, control=False)
            self.sent("slot", slot, variant, user_id, mid)
        self.feedback(user_id, kind, fields)

    def purchase(self, user_id: str, ts: int, price: float) -> None:
        units = self._open.get(user_id)
        if not units:
            return
        live = [u for u in units if ts - u.ts <= self.window_ms or u.ts >= ts]
        self._open[user_id] = live
        latest: dict[int, _Unit] = {}
        for unit in live:
            if not unit.ts < ts:
                continue
            unit.convert(self.on_convert)
            latest[id(unit.funnel)] = unit  # units are in time order: the last wins
        for unit in latest.values():
            unit.funnel.revenue[unit.group] += price

    def rows(self) -> list[Funnel]:
        return sorted(self.funnels.values(), key=lambda f: (f.kind, f.name, f.variant, f.split))
