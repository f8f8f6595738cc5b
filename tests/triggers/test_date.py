"""`date`: a set offset before or after a date attribute, at local time in
the user's zone, once per period (docs/semantics-notes.md, "The date kind").
Expected times are computed here with datetime from the documented rule."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from config.loader import validate_config
from tests.triggers.helpers import engine, ev, feed, pending, run
from triggers import Engine
from triggers.dates import MAX_DATES, parse_date
from triggers.events import event_from_mapping
from triggers.profile import Profile
from triggers.state import BytesStore, UserState

DAY = 86_400_000
BDAY = {"kind": "date", "attribute": "birthday", "offset_days": -3, "at": "09:30"}


def ms(y: int, m: int, d: int, h: int = 0, mi: int = 0, tz: str = "UTC") -> int:
    return int(datetime(y, m, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def attrs(user: str, ts: int, **fields: object) -> dict[str, object]:
    return ev(user, ts, "attributes", **fields)


def test_fires_the_offset_before_at_local_time_in_the_users_zone() -> None:
    fired = run({"bday": BDAY}, [
        attrs("ann", ms(2024, 1, 10), birthday="1990-06-17", tz="Europe/Berlin"),
        attrs("bob", ms(2024, 1, 10), birthday="06-17"),  # no zone: the scene's (UTC)
        ev("x", ms(2024, 6, 20)),
    ])
    assert fired == [("bday", "ann", None, ms(2024, 6, 14, 9, 30, "Europe/Berlin")),
                     ("bday", "bob", None, ms(2024, 6, 14, 9, 30))]


def test_once_per_year_and_the_next_year_is_armed_when_it_fires() -> None:
    eng = engine({"bday": BDAY | {"offset_days": 2, "at": "00:00"}})
    feed(eng, [attrs("ann", ms(2024, 1, 1), birthday="1990-03-01")])
    assert pending(eng) == [("bday", "ann", ms(2024, 3, 3))]
    # The same value again, or any other event: nothing moves.
    feed(eng, [attrs("ann", ms(2024, 2, 1), birthday="1990-03-01"), ev("ann", ms(2024, 2, 2))])
    assert pending(eng) == [("bday", "ann", ms(2024, 3, 3))]
    assert [t.ts for t in eng.advance(ms(2024, 3, 3) + 1)] == [ms(2024, 3, 3)]
    assert pending(eng) == [("bday", "ann", ms(2025, 3, 3))]
    # A change after this year's fired moves next year's, never a second one this year.
    feed(eng, [attrs("ann", ms(2024, 3, 10), birthday="1990-12-01")])
    assert pending(eng) == [("bday", "ann", ms(2025, 12, 3))]


def test_a_time_already_past_this_year_arms_next_year() -> None:
    eng = engine({"bday": BDAY})
    feed(eng, [attrs("ann", ms(2024, 7, 1), birthday="1990-06-17")])
    assert pending(eng) == [("bday", "ann", ms(2025, 6, 14, 9, 30))]


def test_an_attributes_event_at_the_deadline_keeps_it() -> None:
    eng = engine({"bday": BDAY})
    due = ms(2024, 6, 14, 9, 30)
    feed(eng, [attrs("ann", ms(2024, 1, 1), birthday="06-17")])
    assert feed(eng, [attrs("ann", due, birthday="06-17")]) == [[]]
    assert pending(eng) == [("bday", "ann", due)]
    assert feed(eng, [ev("ann", due + 1)]) == [[("bday", "ann", None, due)]]


def test_null_removes_the_date_and_disarms() -> None:
    eng = engine({"bday": BDAY})
    feed(eng, [attrs("ann", ms(2024, 1, 1), birthday="06-17")])
    feed(eng, [attrs("ann", ms(2024, 1, 2), birthday=None)])
    assert pending(eng) == []
    # A value that is not a date leaves the attribute as it was.
    feed(eng, [attrs("ann", ms(2024, 1, 3), birthday="1990-06-17"),
               attrs("ann", ms(2024, 1, 4), birthday="soon")])
    assert pending(eng) == [("bday", "ann", ms(2024, 6, 14, 9, 30))]


def test_every_none_fires_once_on_a_full_date() -> None:
    scene = {"kind": "date", "attribute": "renews_on", "offset_days": -7, "every": "none",
             "timezone": "Asia/Shanghai", "at": "09:00"}
    eng = engine({"renewal": scene})
    feed(eng, [attrs("bob", ms(2024, 1, 1), renews_on="2024-03-01"),
               attrs("cid", ms(2024, 1, 1), renews_on="03-01")])  # no year: never
    assert pending(eng) == [("renewal", "bob", ms(2024, 2, 23, 9, 0, "Asia/Shanghai"))]
    assert len(eng.advance(ms(2030, 1, 1))) == 1
    assert pending(eng) == []
    # A new renewal date is a new period.
    feed(eng, [attrs("bob", ms(2030, 1, 2), renews_on="2030-03-01")])
    assert pending(eng) == [("renewal", "bob", ms(2030, 2, 22, 9, 0, "Asia/Shanghai"))]


def test_february_29_is_february_28_in_other_years() -> None:
    eng = engine({"leap": {"kind": "date", "attribute": "birthday", "at": "12:00"}})
    feed(eng, [attrs("lea", ms(2023, 1, 1), birthday="2000-02-29")])
    assert pending(eng) == [("leap", "lea", ms(2023, 2, 28, 12))]
    eng.advance(ms(2023, 3, 1))
    assert pending(eng) == [("leap", "lea", ms(2024, 2, 29, 12))]


def test_the_dates_survive_the_state_encoding() -> None:
    scenes = {"bday": BDAY}
    events = [attrs("ann", ms(2024, 1, 1), birthday="06-17", tz="Asia/Tokyo"),
              ev("ann", ms(2024, 6, 20)), attrs("bob", ms(2024, 6, 21), birthday="1999-01-05")]
    plain = run(scenes, events)
    # Every put encodes, every get decodes.
    eng = Engine(validate_config({"scenes": scenes}).scene_list(), store=BytesStore({}))
    fired = [t for batch in feed(eng, events) for t in batch]
    assert fired == plain == [("bday", "ann", None, ms(2024, 6, 14, 9, 30, "Asia/Tokyo"))]
    state = UserState.decode(eng.store.get("ann").encode())  # type: ignore[union-attr]
    assert state.profile.dates == {"birthday": "--06-17"}


def test_attributes_are_not_behaviour() -> None:
    profile = Profile()
    profile.update(event_from_mapping(attrs("u", 5, birthday="1990-01-02", tz="Europe/Paris")))
    assert profile.dates == {"birthday": "1990-01-02"} and profile.tz == "Europe/Paris"
    assert profile.last_ts is None and sum(profile.hours) == 0 and profile.engagement == {}


@pytest.mark.parametrize("value,stored", [
    ("1990-06-17", "1990-06-17"), ("06-17", "--06-17"), ("--02-29", "--02-29"),
    ("1990-02-29", None), ("13-01", None), ("1990-6-17", None), (19900617, None),
])
def test_attribute_values(value: object, stored: str | None) -> None:
    assert parse_date(value) == stored


def test_at_most_max_dates_names_are_kept() -> None:
    profile = Profile()
    many = {f"d{i}": "01-01" for i in range(MAX_DATES + 5)}
    profile.update(event_from_mapping(attrs("u", 1, **many)))
    assert len(profile.dates) == MAX_DATES


def test_config_errors_name_the_field() -> None:
    from triggers.errors import ConfigError

    for bad, field in (({"offset_days": 400}, "offset_days"), ({"at": "25:00"}, "at"),
                       ({"timezone": "Mars/Base"}, "timezone"), ({"attribute": "ts"}, "attribute")):
        with pytest.raises(ConfigError, match=field):
            engine({"bday": BDAY | bad})
