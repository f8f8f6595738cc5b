"""Date attributes (birthday, anniversary, renewal) and when a ``date`` scene
fires on them (docs/semantics-notes.md, "The date kind"). Pure.

An attribute reaches the engine as a field of an ``attributes`` event
(``{"type": "attributes", "birthday": "1990-06-17"}``; ``users import``
writes one per user with date fields): the profile keeps the newest value
taken per name (:data:`MAX_DATES` names), ``null`` removes it. A value is
``YYYY-MM-DD`` (a full date) or ``MM-DD`` (a day of the year, no year).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ATTRIBUTES = "attributes"  # the event type that carries them
MAX_DATES = 16
MAX_NAME_CHARS = 64
# Fields of an attributes event that are never date attributes.
NOT_ATTRIBUTES = frozenset({"user_id", "ts", "type", "tz", "locale"})
_FULL = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DAY = re.compile(r"^(?:--)?(\d{2})-(\d{2})$")


def parse_date(value: object) -> str | None:
    """The stored form (``YYYY-MM-DD`` or ``--MM-DD``) of an attribute value,
    None when it is not a date (Feb 29 is a day of the year)."""
    if type(value) is not str:
        return None
    full = _FULL.match(value)
    if full:
        try:
            date(int(full[1]), int(full[2]), int(full[3]))
        except ValueError:
            return None
        return value
    day = _DAY.match(value)
    if day:
        try:
            date(2000, int(day[1]), int(day[2]))  # a leap year: Feb 29 exists
        except ValueError:
            return None
        return f"--{day[1]}-{day[2]}"
    return None


def take_attributes(dates: dict[str, str], fields: Mapping[str, object]) -> None:
    """An attributes event's date fields into ``dates`` (in place): a date
    sets, ``null`` removes, anything else leaves the value as it was. New
    names beyond :data:`MAX_DATES` are not kept."""
    for name, value in fields.items():
        if name in NOT_ATTRIBUTES or len(name) > MAX_NAME_CHARS:
            continue
        if value is None:
            dates.pop(name, None)
            continue
        stored = parse_date(value)
        if stored is not None and (name in dates or len(dates) < MAX_DATES):
            dates[name] = stored


def valid_dates(value: object) -> dict[str, str]:
    """A stored map, or empty when it is not one."""
    if not isinstance(value, dict) or len(value) > MAX_DATES:
        return {}
    out = {k: v for k, v in value.items()
           if type(k) is str and len(k) <= MAX_NAME_CHARS and parse_date(v) == v}
    return out if len(out) == len(value) else {}


def occurrence(stored: str, year: int) -> date | None:
    """The attribute's day in ``year`` (Feb 29 is Feb 28 in other years);
    None for a full date of another year when ``yearly`` is off is the
    caller's business. None when ``year`` has no such date (year 1-9999)."""
    month, day = int(stored[-5:-3]), int(stored[-2:])
    try:
        return date(year, month, day)
    except ValueError:
        if month == 2 and day == 29:
            try:
                return date(year, 2, 28)
            except ValueError:
                return None
        return None


def fire_ms(stored: str, year: int, offset_days: int, at: time, zone: ZoneInfo) -> int | None:
    """When period ``year`` fires: the attribute's day in that year, moved by
    ``offset_days``, at local ``at`` in ``zone`` (a time skipped by a DST
    change is read with the offset before it, as Python does). None when
    that day is outside years 1-9999."""
    day = occurrence(stored, year)
    if day is None:
        return None
    try:
        local = datetime.combine(day + timedelta(days=offset_days), at, tzinfo=zone)
        return int(local.timestamp() * 1000)
    except (OverflowError, ValueError, OSError):
        return None


def year_of(ts: int, zone: ZoneInfo) -> int | None:
    """The local year of ``ts`` (None beyond years 1-9999)."""
    try:
        return datetime.fromtimestamp(ts / 1000, zone).year
    except (OverflowError, ValueError, OSError):
        return None
