"""A slow, obviously-correct reading of SEMANTICS.md, written apart from the engine.

It imports nothing from ``triggers``: it parses the config form itself, keeps
every taken event of every user and recomputes each window by brute force.
Tests run it side by side with the engine and compare every trigger and every
pending timer. Where SEMANTICS.md is silent it follows docs/semantics-notes.md
(keys are the ``per`` value as a string; a re-arm counts as a new arming).

Scene ``user`` filters are modelled for the value segment only (default
thresholds, recomputed from the user's whole taken history): enough to check
when a filter is applied and what a filtered-out fire leaves behind.

The ``date`` kind (docs/semantics-notes.md, "The date kind") keeps each
user's date attributes and zone as the taken events set them and finds an
occurrence by trying every year from 2015 to 2039 (the streams it is
run on lie within).

The per-user trigger budget (``engine.max_triggers_per_user``,
docs/semantics-notes.md) filters the triggers in firing order: one is
given unless ``count`` triggers already given to the user are stamped after
``ts - within``; the scenes' own fires (cooldowns, consumed timers) are as
without a budget.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

RefTrigger = tuple[str, str, str | None, int]  # scene, user_id, key, ts
RefPending = tuple[str, str, int]  # scene, user_id, deadline

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", str(value).strip())
    if match is None:
        raise ValueError(f"bad duration {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def text(value: Any) -> str | None:
    """The string a value is compared as; None for a missing (or null) field."""
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def matches(pred: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    """Every condition holds; a missing field never matches; {} matches all."""
    assert pred is not None
    for name, cond in pred.items():
        got = text(fields.get(name))
        if got is None:
            return False
        if isinstance(cond, Mapping):
            if "in" in cond and got not in {text(v) for v in cond["in"]}:
                return False
            if "prefix" in cond and not got.startswith(cond["prefix"]):
                return False
        elif got != text(cond):
            return False
    return True


def segment(history: Sequence[_Taken], now: int) -> str:
    """The value segment from every purchase taken (docs/content.md, default rules)."""
    buys = [t for t in history if t.fields.get("type") == "purchase"]
    if not buys or now - max(t.ts for t in buys) > 90 * _UNITS["d"]:
        return "new_or_lapsed"
    cents = 0
    for t in buys:
        price = t.fields.get("price")
        value = 0.0 if isinstance(price, bool) or price is None else float(price)
        cents += round(value * 100) if 0 < round(value * 100) <= 10**12 else 0
    if len(buys) >= 3 and cents >= 50_000:
        return "champion"
    if len(buys) >= 2 or cents >= 20_000:
        return "loyal"
    return "promising"


def admits(spec: Mapping[str, Any], history: Sequence[_Taken], now: int) -> bool:
    user = spec.get("user")
    if user is None:
        return True
    assert set(user) == {"segment"}, "the reference models segment filters only"
    return segment(history, now) in user["segment"]["in"]


@dataclass
class _Taken:
    ts: int
    fields: Mapping[str, Any]


@dataclass
class Reference:
    """Feed events (dicts with user_id, ts, type, ...) in input order."""

    scenes: Mapping[str, Mapping[str, Any]]
    history: dict[str, list[_Taken]] = field(default_factory=dict)
    fires: dict[tuple[str, str, str | None], list[int]] = field(default_factory=dict)
    timers: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    clock: int | None = None
    arms: int = 0
    budget: tuple[int, int] | None = None  # (count, within ms)
    given: dict[str, list[int]] = field(default_factory=dict)  # every trigger given, per user
    refused: list[RefTrigger] = field(default_factory=list)  # by the budget
    dates: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> name -> value
    zones: dict[str, str] = field(default_factory=dict)  # user -> the newest zone taken
    periods: dict[tuple[str, str], int] = field(default_factory=dict)  # armed period
    fired_periods: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def _budget(self, triggers: list[RefTrigger]) -> list[RefTrigger]:
        if self.budget is None:
            return triggers
        count, within = self.budget
        out = []
        for trig in triggers:
            given = self.given.setdefault(trig[1], [])
            if sum(1 for t in given if t > trig[3] - within) >= count:
                self.refused.append(trig)
            else:
                given.append(trig[3])
                out.append(trig)
        return out

    def handle(self, event: Mapping[str, Any]) -> list[RefTrigger]:
        user = text(event["user_id"])
        assert user is not None
        ts = event["ts"]
        self.clock = ts if self.clock is None else max(self.clock, ts)
        out = self._fire_due()
        self.history.setdefault(user, []).append(_Taken(ts, event))
        self._take_attributes(user, event)
        for name, spec in self.scenes.items():
            kind = spec["kind"]
            if kind == "absence":
                self._absence(name, spec, user, event)
            elif kind == "date":
                self._date(name, spec, user, event)
            elif kind == "replenishment":
                self._replenishment(name, spec, user, event)
            else:
                rule = {"repeat": self._repeat, "arrival": self._arrival,
                        "sequence": self._sequence}[kind]
                fires, key = rule(name, spec, user, event)
                if fires:
                    out.append((name, user, key, ts))
        return self._budget(out)

    def finish(self, advance_to: int | None = None) -> tuple[list[RefTrigger], list[RefPending]]:
        """End of input: fire what the final clock makes due; the rest is pending."""
        if advance_to is not None and (self.clock is None or advance_to > self.clock):
            self.clock = advance_to
        if self.clock is None:
            return [], []
        fired = self._budget(self._fire_due())
        pending = sorted(self.timers.items(), key=lambda item: item[1])
        return fired, [(scene, user, deadline) for (scene, user), (deadline, _) in pending]

    def _fire_due(self) -> list[RefTrigger]:
        """Due timers one at a time, earliest (deadline, arming) first: a
        fired date timer arms its next period, which may be due as well."""
        clock = self.clock
        assert clock is not None
        out: list[RefTrigger] = []
        while True:
            due = [(deadline, arm, scene, user)
                   for (scene, user), (deadline, arm) in self.timers.items() if clock > deadline]
            if not due:
                return out
            deadline, _, scene, user = min(due)
            del self.timers[(scene, user)]  # consumed, also when the filter refuses
            if admits(self.scenes[scene], self.history.get(user, []), deadline):
                out.append((scene, user, None, deadline))
            if self.scenes[scene]["kind"] == "date":
                period = self.periods.pop((scene, user), None)
                if period is not None:
                    self.fired_periods.setdefault((scene, user), []).append(period)
                self._arm_date(scene, self.scenes[scene], user, deadline)

    def _take_attributes(self, user: str, event: Mapping[str, Any]) -> None:
        tz = event.get("tz")
        if isinstance(tz, str) and tz in REF_ZONES:
            self.zones[user] = tz
        if event.get("type") != "attributes":
            return
        mine = self.dates.setdefault(user, {})
        for name, value in event.items():
            if name in ("user_id", "ts", "type", "tz", "locale"):
                continue
            if value is None:
                mine.pop(name, None)
            elif (stored := ref_date(value)) is not None:
                mine[name] = stored

    def _date(self, name: str, spec: Mapping[str, Any], user: str,
              event: Mapping[str, Any]) -> None:
        if event.get("type") == "attributes":
            self._arm_date(name, spec, user, event["ts"])

    def _arm_date(self, name: str, spec: Mapping[str, Any], user: str, ts: int) -> None:
        """The earliest occurrence at or after ``ts`` of a period later than
        every fired one; none: disarm. The time already armed: no change."""
        value = self.dates.get(user, {}).get(spec["attribute"])
        zone = ZoneInfo(self.zones.get(user, spec.get("timezone", "UTC")))
        fired = self.fired_periods.get((name, user), [])
        best: tuple[int, int] | None = None
        for year in range(2015, 2040):  # the property streams span 2023-2030
            if value is None or (fired and year <= max(fired)):
                continue
            has_year = not value.startswith("--")
            if has_year and year < int(value[:4]):
                continue
            if spec.get("every", "year") == "none" and (not has_year or year != int(value[:4])):
                continue
            when = ref_fire_ms(value, year, spec, zone)
            if when >= ts and (best is None or when < best[1]):
                best = (year, when)
        armed = self.timers.get((name, user))
        if best is None:
            self.timers.pop((name, user), None)
            self.periods.pop((name, user), None)
            return
        self.periods[(name, user)] = best[0]
        if armed is None or armed[0] != best[1]:
            self.arms += 1
            self.timers[(name, user)] = (best[1], self.arms)

    def _absence(self, name: str, spec: Mapping[str, Any], user: str,
                 event: Mapping[str, Any]) -> None:
        if spec.get("cancel") is not None and matches(spec["cancel"], event):
            self.timers.pop((name, user), None)
        elif matches(spec["start"], event):
            self.arms += 1
            self.timers[(name, user)] = (event["ts"] + duration_ms(spec["after"]), self.arms)

    def _replenishment(self, name: str, spec: Mapping[str, Any], user: str,
                       event: Mapping[str, Any]) -> None:
        """docs/semantics-notes.md, "The replenishment kind": a purchase (of
        the category) arms at last + mean + margin, or disarms when the
        cycle is not sure enough; the deadline already armed is no change."""
        scope: dict[str, Any] = {"type": "purchase"}
        category = spec.get("category")
        if category is not None:
            scope["category"] = category
        if not matches(scope, event):
            return
        deadline = refill_deadline(spec, self.history[user])
        armed = self.timers.get((name, user))
        if deadline is None:
            self.timers.pop((name, user), None)
        elif armed is None or armed[0] != deadline:
            self.arms += 1
            self.timers[(name, user)] = (deadline, self.arms)

    def _key(self, spec: Mapping[str, Any], event: Mapping[str, Any]) -> tuple[bool, str | None]:
        """(has a key, the per value as a string); without `per` the key is None."""
        per = spec.get("per")
        if per is None:
            return True, None
        value = text(event.get(per))
        return value is not None, value

    def _cooling(self, name: str, spec: Mapping[str, Any], user: str, key: str | None,
                 ts: int) -> bool:
        if spec.get("cooldown") is None:
            return False
        cooldown = duration_ms(spec["cooldown"])
        return any(ts - f < cooldown for f in self.fires.get((name, user, key), []))

    def _repeat(self, name: str, spec: Mapping[str, Any], user: str,
                event: Mapping[str, Any]) -> tuple[bool, str | None]:
        if not matches(spec["when"], event):
            return False, None
        has_key, key = self._key(spec, event)
        if not has_key:
            return False, None
        ts = event["ts"]
        low = ts - duration_ms(spec["within"])
        per = spec.get("per")
        window = [
            t for t in self.history[user]
            if low < t.ts <= ts and (per is None or text(t.fields.get(per)) == key)
        ]
        if sum(1 for t in window if matches(spec["when"], t.fields)) < int(spec["count"]):
            return False, None
        unless = spec.get("unless")
        if unless is not None and any(matches(unless, t.fields) for t in window):
            return False, None
        if self._cooling(name, spec, user, key, ts) or not admits(spec, self.history[user], ts):
            return False, None
        self.fires.setdefault((name, user, key), []).append(ts)
        return True, key

    def _sequence(self, name: str, spec: Mapping[str, Any], user: str,
                  event: Mapping[str, Any]) -> tuple[bool, str | None]:
        """docs/semantics-notes.md, "The sequence kind": some `first` event a
        of the window with a.ts < e.ts and no `unless` event of the window
        with a.ts <= ts (e itself included)."""
        if not matches(spec["then"], event):
            return False, None
        has_key, key = self._key(spec, event)
        if not has_key:
            return False, None
        ts = event["ts"]
        low = ts - duration_ms(spec["within"])
        per = spec.get("per")
        window = [
            t for t in self.history[user]
            if low < t.ts <= ts and (per is None or text(t.fields.get(per)) == key)
        ]
        unless = spec.get("unless")
        blocked = [t.ts for t in window if unless is not None and matches(unless, t.fields)]
        if not any(t.ts < ts and matches(spec["first"], t.fields)
                   and not any(t.ts <= c for c in blocked) for t in window):
            return False, None
        if self._cooling(name, spec, user, key, ts) or not admits(spec, self.history[user], ts):
            return False, None
        self.fires.setdefault((name, user, key), []).append(ts)
        return True, key

    def _arrival(self, name: str, spec: Mapping[str, Any], user: str,
                 event: Mapping[str, Any]) -> tuple[bool, str | None]:
        if not matches(spec["when"], event):
            return False, None
        has_key, key = self._key(spec, event)
        if not has_key or self._cooling(name, spec, user, key, event["ts"]):
            return False, None
        if not admits(spec, self.history[user], event["ts"]):
            return False, None
        self.fires.setdefault((name, user, key), []).append(event["ts"])
        return True, key


OCCASION_GAP_MS = 3_600_000
KEPT_INTERVALS = 8


def refill_deadline(spec: Mapping[str, Any], history: Sequence[_Taken]) -> int | None:
    """From every purchase taken (of the category: a string field equal to
    it), in taken order: the newest purchase and the intervals between
    occasions (a purchase more than the gap after the newest before it)."""
    category = spec.get("category")
    last: int | None = None
    intervals: list[int] = []
    for t in history:
        if t.fields.get("type") != "purchase":
            continue
        if category is not None and t.fields.get("category") != category:
            continue
        if last is None:
            last = t.ts
        elif t.ts > last + OCCASION_GAP_MS:
            intervals.append(t.ts - last)
            last = t.ts
        elif t.ts > last:
            last = t.ts
    if last is None or not intervals or len(intervals) < spec.get("min_intervals", 2):
        return None
    recent = intervals[-KEPT_INTERVALS:]
    mean = Fraction(sum(recent), len(recent))
    if spec.get("max_spread") is not None:
        variance = sum((x - mean) ** 2 for x in recent) / len(recent)
        if variance > (Fraction(spec["max_spread"]) * mean) ** 2:
            return None
    return last + sum(recent) // len(recent) + duration_ms(spec["margin"])


REF_ZONES = frozenset({"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata",
                       "Australia/Lord_Howe"})


def ref_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` as is, ``MM-DD`` or ``--MM-DD`` as ``--MM-DD`` (Feb 29
    allowed), anything else None."""
    if not isinstance(value, str):
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            date.fromisoformat(value)
        except ValueError:
            return None
        return value
    found = re.fullmatch(r"(?:--)?(\d{2})-(\d{2})", value)
    if found is None:
        return None
    try:
        date(2000, int(found[1]), int(found[2]))
    except ValueError:
        return None
    return f"--{found[1]}-{found[2]}"


def ref_fire_ms(value: str, year: int, spec: Mapping[str, Any], zone: ZoneInfo) -> int:
    month, day = int(value[-5:-3]), int(value[-2:])
    if (month, day) == (2, 29) and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        day = 28
    hour, minute = (int(x) for x in spec.get("at", "09:00").split(":"))
    moved = date(year, month, day) + timedelta(days=spec.get("offset_days", 0))
    local = datetime(moved.year, moved.month, moved.day, hour, minute, tzinfo=zone)
    return int(local.timestamp()) * 1000


def run_reference(
    scenes: Mapping[str, Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    advance_to: int | None = None,
    budget: tuple[int, int] | None = None,
) -> tuple[list[RefTrigger], list[RefPending]]:
    """Every trigger in firing order, and the timers pending at the end."""
    ref = Reference(scenes, budget=budget)
    out: list[RefTrigger] = []
    for event in events:
        out.extend(ref.handle(event))
    fired, pending = ref.finish(advance_to)
    return out + fired, pending
