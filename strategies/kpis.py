"""The shop's own numbers (``report --kpis``), from the same event stream as
the funnel report. Definitions (docs/measurement.md, "KPIs"):

* a *person* is a user id after identity resolution: an ``identify`` event
  (``known_id``) folds the anonymous id's whole history into the known user;
* a *visitor* is an id with events that is never an ``identify``'s known id;
  it *registered* if it sent an ``identify``: registration rate = registered
  / visitors;
* add-to-cart rate = people with a ``cart`` / people;
* first-purchase rate = people with a ``purchase`` / people (the first one
  the stream sees);
* an *order* is a person's purchases at one timestamp; repurchase rate =
  buyers with two or more orders / buyers;
* weekly purchase retention: a buyer's cohort is the UTC week (from Monday)
  of their first purchase; week k's figure is the share of the cohort with a
  purchase in the cohort's week + k.

Each figure is also split by the person's segment and style (the last
``replay --deliver`` line of theirs that says it, else ``-``) and by the
global control group (the line's mark, else the hash of the person).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.policy.control import in_global_control
from config.strategy_models import ControlModel
from strategies.holdout import global_mark
from triggers.events import Event

WEEK_MS = 7 * 86_400_000
MONDAY_OFFSET_MS = 3 * 86_400_000  # the Unix epoch was a Thursday
SPLITS = ("segment", "style", "global")


@dataclass
class _Person:
    first_ts: int | None = None
    carted: bool = False
    orders: set[int] = field(default_factory=set)

    def fold(self, other: _Person) -> None:
        if other.first_ts is not None:
            self.first_ts = other.first_ts if self.first_ts is None \
                else min(self.first_ts, other.first_ts)
        self.carted |= other.carted
        self.orders |= other.orders


class Kpis:
    """Feed events (any order); then :meth:`result` with the trigger lines."""

    def __init__(self) -> None:
        self._ids: dict[str, _Person] = defaultdict(_Person)
        self._alias: dict[str, str] = {}  # anonymous id -> known id

    def on_event(self, event: Event) -> None:
        if event.type == "identify":
            known = event.fields.get("known_id")
            if isinstance(known, str) and known and known != event.user_id:
                self._alias[event.user_id] = known
            return
        person = self._ids[event.user_id]
        person.first_ts = event.ts if person.first_ts is None else min(person.first_ts, event.ts)
        if event.type == "cart":
            person.carted = True
        elif event.type == "purchase":
            person.orders.add(event.ts)

    def _resolve(self, user_id: str) -> str:
        seen = {user_id}
        while user_id in self._alias and self._alias[user_id] not in seen:
            user_id = self._alias[user_id]
            seen.add(user_id)
        return user_id

    def result(self, trigger_records: Iterable[Mapping[str, Any]],
               control: ControlModel) -> dict[str, Any]:
        known = {self._resolve(k) for k in self._alias.values()}
        people: dict[str, _Person] = defaultdict(_Person)
        visitors: dict[str, bool] = {}  # visitor id -> registered
        for user_id, person in self._ids.items():
            if user_id not in known:
                visitors[user_id] = user_id in self._alias
            people[self._resolve(user_id)].fold(person)
        marks: dict[str, dict[str, str]] = defaultdict(dict)
        for record in trigger_records:
            who = marks[self._resolve(str(record["user_id"]))]
            for name in ("segment", "style"):
                if record.get(name):
                    who[name] = str(record[name])
            held = global_mark(record)
            if held is not None:
                who["global"] = "held_out" if held else "marketed"

        def split_of(person_id: str) -> dict[str, str]:
            mine = marks.get(person_id, {})
            held = mine.get("global") or ("held_out" if in_global_control(control, person_id)
                                          else "marketed")
            return {"segment": mine.get("segment", "-"), "style": mine.get("style", "-"),
                    "global": held}

        splits = {pid: split_of(pid) for pid in people}
        out: dict[str, Any] = {"all": _figures(people, visitors)}
        by: dict[str, dict[str, Any]] = {}
        for name in SPLITS:
            values = sorted({s[name] for s in splits.values()})
            by[name] = {value: _figures(
                {p: v for p, v in people.items() if splits[p][name] == value},
                {v: r for v, r in visitors.items() if splits[self._resolve(v)][name] == value}) for value in values}
        out["by"] = by
        return out


def week_of(ts: int) -> int:
    """The UTC Monday 00:00 (ms) of the week holding ``ts``."""
    return (ts + MONDAY_OFFSET_MS) // WEEK_MS * WEEK_MS - MONDAY_OFFSET_MS


def _rate(x: int, n: int) -> float | None:
    return x / n if n else None


def _figures(people: Mapping[str, _Person], visitors: Mapping[str, bool]) -> dict[str, Any]:
    registered = sum(visitors.values())
    buyers = {p: v for p, v in people.items() if v.orders}
    carted = sum(1 for v in people.values() if v.carted)
    repeat = sum(1 for v in buyers.values() if len(v.orders) >= 2)
    cohorts: dict[int, list[_Person]] = defaultdict(list)
    for person in buyers.values():
        cohorts[week_of(min(person.orders))].append(person)
    last = max((week_of(max(v.orders)) for v in buyers.values()), default=0)
    rows = []
    for start in sorted(cohorts):
        members = cohorts[start]
        counts = [sum(1 for v in members if any(week_of(t) == start + k * WEEK_MS
                                                for t in v.orders))
                  for k in range((last - start) // WEEK_MS + 1)]
        rows.append({"week": start, "size": len(members), "counts": counts,
                     "retained": [c / len(members) for c in counts]})
    return {"visitors": len(visitors), "registered": registered,
            "registration_rate": _rate(registered, len(visitors)),
            "people": len(people), "carted": carted,
            "add_to_cart_rate": _rate(carted, len(people)),
            "buyers": len(buyers), "first_purchase_rate": _rate(len(buyers), len(people)),
            "repeat_buyers": repeat, "repurchase_rate": _rate(repeat, len(buyers)),
            "cohorts": rows}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render_kpis(result: Mapping[str, Any]) -> str:
    head = (f"{'split':<10} {'value':<16} {'visitors':>8} {'regist':>7} {'people':>7} "
            f"{'cart':>7} {'buy 1st':>7} {'rebuy':>7}")
    lines = [head, "-" * len(head)]
    groups = [("all", "-", result["all"])] + [
        (name, value, fig) for name, values in result["by"].items()
        for value, fig in values.items()]
    for name, value, fig in groups:
        lines.append(f"{name:<10} {value[:16]:<16} {fig['visitors']:>8} "
                     f"{_pct(fig['registration_rate']):>7} {fig['people']:>7} "
                     f"{_pct(fig['add_to_cart_rate']):>7} "
                     f"{_pct(fig['first_purchase_rate']):>7} {_pct(fig['repurchase_rate']):>7}")
    lines.append("")
    lines.append("weekly purchase retention (all): cohort week (UTC Monday), size, week 0, 1, ...")
    for row in result["all"]["cohorts"]:
        week = dt.datetime.fromtimestamp(row["week"] / 1000, dt.UTC).date().isoformat()
        lines.append(f"  {week} {row['size']:>6}  " + " ".join(_pct(r) for r in row["retained"]))
    return "\n".join(lines)
