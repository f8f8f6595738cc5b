"""The lift of send-time optimisation (``report --send-time``): open and
conversion rates of the requests held for the user's best hour over those
of the holdout sent at once, per scene or journey, with the report's 95 %
interval clustered by user (:mod:`strategies.intervals`).

A unit is a ``replay --deliver`` line marked ``"send_time": "best"`` or
``"holdout"`` (the arm is drawn by a hash of the user, so a user's units
share an arm: the users are the clusters). It is *opened* when an
``opened`` or ``clicked`` event of its user for its scene (the feedback
event's ``scene``) comes within the attribution window after the trigger,
and *converted* when a ``purchase`` of the user does. Intent to treat: a
unit counts in its arm whether it was held, sent at once or suppressed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from strategies.intervals import clustered_interval, clustered_variance
from triggers.events import Event

ARMS = ("best", "holdout")
OPENS = frozenset({"opened", "clicked"})


@dataclass(slots=True)
class _Unit:
    ts: int
    opened: bool = False
    converted: bool = False


@dataclass(frozen=True, slots=True)
class Lift:
    name: str  # the scene (or journey label)
    units: dict[str, int]  # per arm
    users: dict[str, int]
    open_rate: dict[str, float | None]
    conversion_rate: dict[str, float | None]
    open_lift: float | None  # best minus holdout
    open_interval: tuple[float, float] | None
    conversion_lift: float | None
    conversion_interval: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "units": self.units, "users": self.users,
                "open_rate": self.open_rate, "conversion_rate": self.conversion_rate,
                "open_lift": self.open_lift, "open_interval": self.open_interval,
                "conversion_lift": self.conversion_lift,
                "conversion_interval": self.conversion_interval}


def send_time_lift(trigger_records: Iterable[Mapping[str, Any]], events: Iterable[Event],
                   window_ms: int) -> list[Lift]:
    """One row per scene with marked units, in order of first appearance."""
    # (scene, arm) -> user -> units, newest last; user -> [(scene, arm)]
    units: dict[tuple[str, str], dict[str, list[_Unit]]] = defaultdict(lambda: defaultdict(list))
    by_user: dict[str, list[tuple[str, str]]] = defaultdict(list)
    names: dict[str, None] = {}
    for record in trigger_records:
        arm = record.get("send_time")
        if arm not in ARMS:
            continue
        scene, user = str(record["scene"]), str(record["user_id"])
        names.setdefault(scene, None)
        units[scene, arm][user].append(_Unit(int(record["ts"])))
        if (scene, arm) not in by_user[user]:
            by_user[user].append((scene, arm))
    for cells in units.values():
        for mine in cells.values():
            mine.sort(key=lambda u: u.ts)
    for event in events:
        if event.type not in OPENS and event.type != "purchase":
            continue
        for scene, arm in by_user.get(event.user_id, ()):
            if event.type in OPENS and event.fields.get("scene") != scene:
                continue
            mine = units[scene, arm][event.user_id]
            # Units fired within the window before the event (inclusive of its time).
            first = bisect_left([u.ts for u in mine], event.ts - window_ms)
            for unit in mine[first:]:
                if unit.ts > event.ts:
                    break
                if event.type == "purchase":
                    unit.converted = True
                else:
                    unit.opened = True
    return [_row(name, {arm: units.get((name, arm), {}) for arm in ARMS}) for name in names]


def _row(name: str, arms: dict[str, Mapping[str, list[_Unit]]]) -> Lift:
    def clusters(arm: str, what: str) -> list[tuple[int, int]]:
        return [(len(us), sum(getattr(u, what) for u in us)) for us in arms[arm].values()]

    def rate(arm: str, what: str) -> float | None:
        total = sum(n for n, _ in clusters(arm, what))
        return sum(x for _, x in clusters(arm, what)) / total if total else None

    def lift(what: str) -> tuple[float | None, tuple[float, float] | None]:
        best, held = clustered_variance(clusters("best", what)), clustered_variance(
            clusters("holdout", what))
        if best is None or held is None:
            return None, None
        return best[0] - held[0], clustered_interval(clusters("best", what),
                                                     clusters("holdout", what))

    open_lift, open_interval = lift("opened")
    conv_lift, conv_interval = lift("converted")
    return Lift(name, {a: sum(len(us) for us in arms[a].values()) for a in ARMS},
                {a: len(arms[a]) for a in ARMS}, {a: rate(a, "opened") for a in ARMS},
                {a: rate(a, "converted") for a in ARMS}, open_lift, open_interval,
                conv_lift, conv_interval)


def render_lift(rows: list[Lift], window_ms: int) -> str:
    if not rows:
        return ("send time: no line carries a send_time arm (replay --deliver with a scene "
                "or step that has send_time: {mode: best})")
    out = [f"send time: optimised (best) vs holdout (sent at once); opens and purchases "
           f"within {window_ms // 3_600_000}h of the trigger",
           f"{'scene':<24}{'arm':<9}{'units':>7}{'users':>7}{'open rate':>11}{'conv rate':>11}"]
    for row in rows:
        for arm in ARMS:
            out.append(f"{row.name:<24}{arm:<9}{row.units[arm]:>7}{row.users[arm]:>7}"
                       f"{_pct(row.open_rate[arm]):>11}{_pct(row.conversion_rate[arm]):>11}")
        out.append(f"{'':<24}lift     open {_pp(row.open_lift, row.open_interval)}; "
                   f"conversion {_pp(row.conversion_lift, row.conversion_interval)}")
    out.append("lift: best minus holdout, percentage points, 95 % interval clustered by user")
    return "\n".join(out)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pp(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return "- (an arm has fewer than two users)"
    text = f"{100 * value:+.1f} pp"
    if interval is not None:
        text += f" [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"
    return text
