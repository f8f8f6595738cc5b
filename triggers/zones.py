"""Time zone names from the outside world: only a known IANA zone is one.

``ZoneInfo`` is handed whatever a caller gives it: ``"America"`` is a
directory of the tz database and raises ``IsADirectoryError`` (an
``OSError``, easily mistaken for a network fault), a data file name such as
``"zone.tab"`` raises ``ValueError``. So a name is checked against the set of
zones the tz database lists before any ``ZoneInfo`` is built from it; every
reader of a user's zone (the profile, habit tags, the delivery policy) asks
here.
"""

from __future__ import annotations

from functools import cache
from zoneinfo import ZoneInfo, available_timezones

MAX_ZONE_CHARS = 64


@cache
def known_zones() -> frozenset[str]:
    """The zone names of the installed tz database (read once, ~0.1 s)."""
    return frozenset(available_timezones())


def is_zone_name(name: object) -> bool:
    """True for a string naming a zone of the tz database (``Europe/Paris``, ``UTC``)."""
    return type(name) is str and 0 < len(name) <= MAX_ZONE_CHARS and name in known_zones()


def zone_or_none(name: object) -> ZoneInfo | None:
    """The zone ``name`` names, or None for anything that is not a known zone."""
    if not is_zone_name(name):
        return None
    assert isinstance(name, str)
    try:
        return ZoneInfo(name)
    except (ValueError, OSError):  # listed but unreadable: treat as unknown
        return None
