"""``report --experiment``: a config experiment's two arms compared
(docs/measurement.md, "Experiments").

The unit is a user with an event in the experiment's period (from the
candidate version's time to the version that ended it, and no later than
the fixed horizon); the arm is :func:`config.experiment.in_candidate`'s
hash, so every user is one independent draw. Per arm: users, users who
bought after their first event in the period (conversion), triggers and
revenue per user. The conversion uplift has Newcombe's interval on users,
the per-user means Welch's (normal) interval.

Stopping rule: fixed horizon. The decision is read once, when the data
reach the horizon; a report before that shows the figures and says that no
decision is due (looking repeatedly and stopping at the first interval that
excludes 0 would inflate the false-positive rate above 5 %).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from config.experiment import BASE, CANDIDATE, in_candidate
from strategies.attribution import Z95, newcombe_interval
from strategies.reporting import price_of
from triggers.events import Event

RULE = "fixed horizon"


@dataclass(frozen=True, slots=True)
class Period:
    version: int  # the candidate's
    base: int
    share: float
    started_ms: int
    ended_ms: int | None  # the version that ended it (promote, rollback), if any
    horizon_ms: int

    @property
    def until_ms(self) -> int:
        end = self.started_ms + self.horizon_ms
        return end if self.ended_ms is None else min(end, self.ended_ms)


@dataclass
class _User:
    first: int
    bought: bool = False
    revenue: float = 0.0
    triggers: int = 0


@dataclass
class _Arm:
    users: dict[str, _User] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        n = len(self.users)
        converted = sum(u.bought for u in self.users.values())
        return {"users": n, "converted": converted, "cr": converted / n if n else None,
                "triggers_per_user": _mean([u.triggers for u in self.users.values()]),
                "revenue_per_user": _mean([u.revenue for u in self.users.values()])}


def compare(period: Period, trigger_records: Iterable[Mapping[str, Any]],
            events: Iterable[Event]) -> dict[str, Any]:
    arms = {CANDIDATE: _Arm(), BASE: _Arm()}
    until, last = period.until_ms, None
    for event in events:
        last = event.ts if last is None else max(last, event.ts)
        if not period.started_ms <= event.ts < until:
            continue
        arm = arms[CANDIDATE if in_candidate(period.version, period.share, event.user_id)
                   else BASE]
        user = arm.users.get(event.user_id)
        if user is None:
            user = arm.users[event.user_id] = _User(event.ts)
        elif event.type == "purchase" and event.ts > user.first:
            user.bought = True
            user.revenue += price_of(event.fields.get("price"))
    for record in trigger_records:
        user_id, ts = str(record["user_id"]), int(record["ts"])
        if period.started_ms <= ts < until:
            arm = arms[CANDIDATE if in_candidate(period.version, period.share, user_id)
                       else BASE]
            if user_id in arm.users:
                arm.users[user_id].triggers += 1
    cand, base = arms[CANDIDATE], arms[BASE]
    out: dict[str, Any] = {
        "experiment": {"version": period.version, "base": period.base, "share": period.share,
                       "started_ms": period.started_ms, "ended_ms": period.ended_ms,
                       "horizon_ms": period.horizon_ms, "until_ms": until},
        CANDIDATE: cand.summary(), BASE: base.summary()}
    out["uplift"] = _uplift(out[CANDIDATE], out[BASE])
    for name in ("triggers_per_user", "revenue_per_user"):
        out[f"{name}_diff"] = _welch([getattr(u, _FIELD[name]) for u in cand.users.values()],
                                     [getattr(u, _FIELD[name]) for u in base.users.values()])
    # the data reach the horizon (an experiment ended before it is never decided)
    reached = last is not None and last >= period.started_ms + period.horizon_ms
    out["stopping"] = _decision(out["uplift"], period, reached)
    return out


_FIELD = {"triggers_per_user": "triggers", "revenue_per_user": "revenue"}


def _mean(values: list[float] | list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _uplift(cand: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    if not cand["users"] or not base["users"]:
        return {"diff": None, "ci95": None}
    low, high = newcombe_interval(cand["converted"], cand["users"], base["converted"],
                                  base["users"])
    return {"diff": cand["cr"] - base["cr"], "ci95": [low, high]}


def _welch(a: list[float] | list[int], b: list[float] | list[int]) -> dict[str, Any]:
    if len(a) < 2 or len(b) < 2:
        return {"diff": None, "ci95": None}
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    half = Z95 * math.sqrt(va / len(a) + vb / len(b))
    return {"diff": ma - mb, "ci95": [ma - mb - half, ma - mb + half]}


def _decision(uplift: Mapping[str, Any], period: Period, reached: bool) -> dict[str, Any]:
    ci = uplift["ci95"]
    if period.until_ms < period.started_ms + period.horizon_ms:
        verdict = ("ended before its horizon: no decision under the fixed-horizon rule "
                   "(the figures are for information)")
    elif not reached:
        verdict = "not yet: decide at the horizon (the figures so far are for watching only)"
    elif ci is None:
        verdict = "no decision: an arm has no users"
    elif ci[0] > 0:
        verdict = "candidate converts better: promote"
    elif ci[1] < 0:
        verdict = "candidate converts worse: roll back"
    else:
        verdict = "no difference shown at this sample size: the interval holds 0"
    return {"rule": RULE, "decide_at_ms": period.until_ms, "reached": reached,
            "verdict": verdict}


def render(result: Mapping[str, Any]) -> str:
    exp = result["experiment"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"experiment: v{exp['version']} for {exp['share']:.0%} of users (by hash) "
             f"against v{exp['base']}",
             f"{'arm':<10} {'users':>7} {'converted':>9} {'cr':>8} {'trig/user':>9} "
             f"{'rev/user':>9}"]
    for arm in (CANDIDATE, BASE):
        s = result[arm]
        lines.append(f"{arm:<10} {s['users']:>7} {s['converted']:>9} {pct(s['cr']):>8} "
                     f"{num(s['triggers_per_user']):>9} {num(s['revenue_per_user']):>9}")
    up = result["uplift"]
    ci = up["ci95"]
    lines.append(f"conversion uplift (candidate - base): {pct(up['diff'])}, 95% CI "
                 + ("n/a" if ci is None else f"[{pct(ci[0])}, {pct(ci[1])}]")
                 + " (Newcombe, users)")
    for name in ("triggers_per_user", "revenue_per_user"):
        d = result[f"{name}_diff"]
        ci = d["ci95"]
        lines.append(f"{name.replace('_', ' ')} diff: {num(d['diff'])}, 95% CI "
                     + ("n/a" if ci is None else f"[{num(ci[0])}, {num(ci[1])}]") + " (Welch)")
    stop = result["stopping"]
    lines.append(f"stopping rule: {stop['rule']}; {stop['verdict']}")
    return "\n".join(lines)
