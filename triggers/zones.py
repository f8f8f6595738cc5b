"""Time zone names from the outside world: only an IANA region zone or ``UTC``.

This is the one check every reader of a zone asks (config validation, the
contact directory behind ``users import``/``set``, an event's ``tz`` in the
profile, habit tags, the delivery policy). A name passes when it is ``UTC``
or ``Area/Location`` with a region area of the tz database (``Europe/Paris``,
``America/Argentina/Salta``) and the installed tz database lists it.
Refused, with why:

* ``localtime`` (and ``posixrules``): files some systems keep beside the
  zones; ``localtime`` is the host's ``/etc/localtime``, so quiet hours
  would follow the machine, not the user;
* ``Factory``, ``Etc/*`` and the old aliases (``GMT``, ``US/Eastern``,
  ``Japan``): not regions (use ``UTC`` or the region the alias names);
* ``right/*`` and ``posix/*``: copies of the zones with other leap-second
  rules that the host may or may not have;
* tz database directories and data files: ``ZoneInfo("America")`` raised
  ``IsADirectoryError`` (an ``OSError``, easily mistaken for a network
  fault), ``ZoneInfo("zone.tab")`` ``ValueError``.
"""

from __future__ import annotations

from functools import cache
from zoneinfo import ZoneInfo, available_timezones

MAX_ZONE_CHARS = 64
UTC_NAME = "UTC"
# The continent and ocean areas of the tz database: a region zone is Area/Location.
REGION_AREAS = frozenset({"Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic",
                          "Australia", "Europe", "Indian", "Pacific"})
ZONE_RULE = "an IANA region zone such as 'Asia/Shanghai', or 'UTC'"


@cache
def known_zones() -> frozenset[str]:
    """The region zones of the installed tz database and ``UTC`` (read once, ~0.1 s)."""
    return frozenset(name for name in available_timezones()
                     if name == UTC_NAME or _region_form(name))


def _region_form(name: str) -> bool:
    area, slash, location = name.partition("/")
    return bool(slash) and area in REGION_AREAS and bool(location)


def is_zone_name(name: object) -> bool:
    """True for ``UTC`` or a region zone the tz database lists (``Europe/Paris``)."""
    return type(name) is str and 0 < len(name) <= MAX_ZONE_CHARS and name in known_zones()


def zone_or_none(name: object) -> ZoneInfo | None:
    """The zone ``name`` names, or None for anything :func:`is_zone_name` refuses."""
    if not is_zone_name(name):
        return None
    assert isinstance(name, str)
    try:
        return ZoneInfo(name)
    except (ValueError, OSError):  # listed but unreadable: treat as unknown
        return None
