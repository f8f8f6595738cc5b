"""Issue 19, point 5: only ``UTC`` and IANA region zones are time zones.

``localtime`` passed the check (the tz database directory lists it: it is the
host's ``/etc/localtime``), so quiet hours could follow the machine instead
of the user; ``Factory``, ``posixrules`` and the ``right/``/``posix/`` copies
passed too. Every reader asks :mod:`triggers.zones`: config validation, the
contact directory (``users import``/``set``, ``serve /users``), an event's
``tz`` in the profile, and the delivery policy's zone lookup.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from channels.audience.directory import Contact, ContactError, contact_from
from config.delivery_models import DeliveryModel
from triggers.classify import utc_offset_hours
from triggers.events import Event
from triggers.profile import Profile
from triggers.zones import is_zone_name, zone_or_none

T0 = 1_700_000_000_000
REFUSED = ["localtime", "Factory", "posixrules", "right/Europe/Paris", "posix/Europe/Paris",
           "right/UTC", "posix/Asia/Shanghai", "Etc/GMT+5", "Etc/UTC", "GMT", "US/Eastern",
           "Japan", "Europe", "Europe/", "/Europe/Paris", "utc", "Mars/Base"]
ACCEPTED = ["UTC", "Asia/Shanghai", "Europe/Paris", "America/Argentina/Salta",
            "Pacific/Auckland", "Indian/Maldives", "Antarctica/Troll", "Atlantic/Azores"]


@pytest.mark.parametrize("name", REFUSED)
def test_refused_names_are_no_zone(name: str) -> None:
    assert not is_zone_name(name)
    assert zone_or_none(name) is None
    assert utc_offset_hours(name, T0) == 0  # the habit tags' reader: the default, no host zone


@pytest.mark.parametrize("name", ACCEPTED)
def test_region_zones_and_utc_are_zones(name: str) -> None:
    zone = zone_or_none(name)
    assert is_zone_name(name) and zone is not None and zone.key == name


@pytest.mark.parametrize("name", REFUSED)
def test_config_refuses_the_default_zone(name: str) -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        DeliveryModel(default_timezone=name)


@pytest.mark.parametrize("name", ACCEPTED)
def test_config_accepts_a_region_zone(name: str) -> None:
    assert DeliveryModel(default_timezone=name).default_timezone == name


@pytest.mark.parametrize("name", REFUSED)
def test_directory_refuses_the_zone_on_import_and_set(name: str) -> None:
    with pytest.raises(ContactError, match="timezone"):
        contact_from("ann", {"timezone": name})  # users import, a new user
    ann = Contact("ann", email="ann@example.com")
    with pytest.raises(ContactError, match="timezone"):
        ann.merged({"timezone": name})  # users set / PATCH /users/ann, an existing one


@pytest.mark.parametrize("name", ACCEPTED)
def test_directory_keeps_a_region_zone(name: str) -> None:
    assert contact_from("ann", {"timezone": name}).timezone == name


@pytest.mark.parametrize("name", REFUSED)
def test_an_events_zone_is_kept_only_when_it_is_one(name: str) -> None:
    profile = Profile()
    for ts, tz in ((T0, "Asia/Shanghai"), (T0 + 1, name)):
        profile.update(Event("u", ts, "view", {"user_id": "u", "ts": ts, "type": "view",
                                               "tz": tz}))
    assert profile.tz == "Asia/Shanghai"
    assert Profile.from_wire(_with_tz(profile, name)).tz is None  # stored data: same check


def _with_tz(profile: Profile, name: str) -> list[object]:
    """The profile's wire form with its zone replaced (as forged or old stored data)."""
    wire = profile.to_wire()
    assert wire.count("Asia/Shanghai") == 1
    return [name if item == "Asia/Shanghai" else item for item in wire]
