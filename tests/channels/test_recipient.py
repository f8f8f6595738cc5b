"""The recipient, resolved once per decision (channels.audience.recipient):
locale and zone in one order (directory, events, default) for content,
habit tags and quiet hours alike; a pure reach(); one Redis round trip on
real Redis, the do-not-contact hits kept beside the record and cleared when
an entry names a known address."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Connection, Redis

from channels.assembly import DryRunSender, audience_rules, build_pipeline
from channels.audience.consent import ConsentRecord, MemoryConsentStore, RedisConsentStore
from channels.audience.directory import (
    MemoryDirectory,
    RedisDirectory,
    address_hash,
    contact_from,
    dnc_hits_key,
)
from channels.audience.recipient import Audience, OpenAudience, RedisReader, Rules
from config.hash_keys import HashKeys
from config.loader import load_config_text
from triggers.events import Event, Trigger
from triggers.state import UserState

NOON = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
CONFIG = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
delivery:
  default_timezone: Europe/Berlin
  quiet_hours: {enabled: false}
  caps: {per_day: null, per_week: null}
content:
  default_locale: fr
  scenes:
    promo_arrival:
      fallback: {channels: [inbox], subject: "Sale", text: "Sale"}
"""
KEYS = HashKeys(b"k" * 32)


def events_at_14_utc(user: str, tz: str | None = None) -> UserState:
    """Twenty weekday events, all at 14:00 UTC (afternoon in UTC, evening in Shanghai)."""
    state = UserState()
    monday = int(datetime(2026, 5, 4, 14, 0, tzinfo=UTC).timestamp() * 1000)
    for n in range(20):
        fields: dict[str, Any] = {"product_id": "p1", "locale": "de"}
        if tz is not None:
            fields["tz"] = tz
        state.profile.update(Event(user, monday + (n % 5) * 86_400_000, "view", fields))
    return state


async def test_locale_and_zone_come_in_one_order() -> None:
    directory, consent = MemoryDirectory(), MemoryConsentStore()
    await directory.put(contact_from("dir", {"locale": "zh-CN", "timezone": "Asia/Shanghai"}))
    audience = Audience(directory, consent, Rules(), default_tz="Europe/Berlin",
                        default_locale="fr")
    events = events_at_14_utc("ev", tz="America/New_York").profile
    from_directory = await audience.resolve("dir", "marketing", events)
    from_events = await audience.resolve("ev", "marketing", events)
    from_defaults = await audience.resolve("nobody", "marketing", None)
    assert (from_directory.locale, from_directory.zone) == ("zh-CN", "Asia/Shanghai")
    assert (from_events.locale, from_events.zone) == ("de", "America/New_York")
    assert (from_defaults.locale, from_defaults.zone) == ("fr", "Europe/Berlin")
    # The open audience of a dry run: the same order without a directory.
    opened = await OpenAudience("Europe/Berlin", "fr").resolve("ev", "marketing", events)
    assert (opened.locale, opened.zone) == ("de", "America/New_York")


async def test_habit_tags_take_the_directory_zone_as_quiet_hours_do() -> None:
    cfg = load_config_text(CONFIG)
    directory = MemoryDirectory()
    await directory.put(contact_from("sh", {"timezone": "Asia/Shanghai"}))
    audience = Audience(directory, MemoryConsentStore(), Rules(),
                        default_tz=cfg.delivery.default_timezone)
    pipe = build_pipeline(cfg, "dry-run", DryRunSender(), audience=audience)
    sh = await pipe.deliver(Trigger("promo_arrival", "sh", "/promo/1", NOON),
                            events_at_14_utc("sh"), NOON)
    utc = await pipe.deliver(Trigger("promo_arrival", "utc", "/promo/1", NOON),
                             events_at_14_utc("utc", tz="UTC"), NOON)
    # 14:00 UTC is 22:00 in Shanghai: the directory's zone, not the events' (none).
    assert "tod:evening" in sh.tags and "tod:afternoon" not in sh.tags, sh
    assert "tod:afternoon" in utc.tags, utc


def test_reach_is_pure_and_the_users_choice_outranks_a_missing_address() -> None:
    from channels.audience.recipient import Recipient

    contact = contact_from("ann", {"email": "ann@example.com"})
    rules = audience_rules({"mail": "email", "text": "sms", "app": "push"})
    ann = Recipient("ann", "marketing", None, None, contact,
                    {"email:marketing": ConsentRecord(False, 1, "api")}, frozenset(), rules)
    reach = ann.reach(("mail", "text", "app"))
    assert reach.allowed == () and reach.reason == "unsubscribed"
    assert reach.refused == (("mail", "unsubscribed"), ("text", "no_address"),
                             ("app", "no_address"))
    assert ann.reach(("mail",)) == reach.__class__((), "unsubscribed",
                                                   (("mail", "unsubscribed"),))
    blocked = Recipient("ann", "transactional", None, None, contact, {}, frozenset({"email"}),
                        rules)
    assert blocked.reach(("mail", "inbox")).allowed == ("inbox",)
    assert blocked.reach(("mail",)).reason == "do_not_contact"


class Counting(Connection):
    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counting.sent += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def redis(redis_url: str) -> Any:
    client = Redis.from_url(redis_url, decode_responses=True, connection_class=Counting)
    yield client
    await client.aclose()


async def test_one_round_trip_and_do_not_contact_hits_kept_until_they_change(
        redis: Redis) -> None:
    prefix = f"rcp{uuid.uuid4().hex[:8]}:"
    directory, consent = RedisDirectory(redis, prefix), RedisConsentStore(redis, prefix, KEYS)
    audience = Audience(directory, consent, audience_rules({"mail": "email", "text": "sms"}))
    assert isinstance(audience.reader, RedisReader)
    await directory.put(contact_from("ann", {"email": "ann@example.com",
                                             "phone": "+8613800000000", "locale": "en"}))
    await consent.set("ann", "sms", "marketing", ConsentRecord(False, 1, "sms_reply"))
    first = await audience.resolve("ann", "marketing", None)  # looks the hits up, keeps them
    before = Counting.sent
    ann = await audience.resolve("ann", "marketing", None)
    assert Counting.sent - before == 1  # record, consent and kept hits: one script
    assert ann == first and ann.locale == "en"
    assert ann.reach(("mail", "text")).refused == (("text", "unsubscribed"),)
    # An entry for a known address clears what was kept: the next read sees it.
    await consent.do_not_contact([address_hash("email", "ann@example.com")], 2, "erasure")
    assert await redis.exists(dnc_hits_key(prefix, "ann")) == 0
    blocked = await audience.resolve("ann", "marketing", None)
    assert blocked.blocked == frozenset({"email"})
    assert blocked.reach(("mail",)).reason == "do_not_contact"
    # A new address is looked up again (the kept hits name the addresses they were for).
    await consent.do_not_contact([address_hash("phone", "+8613900000000")], 3, "sms_reply")
    await directory.put(contact_from("ann", {"email": "new@example.com",
                                             "phone": "+8613900000000"}))
    moved = await audience.resolve("ann", "marketing", None)
    assert moved.blocked == frozenset({"phone"})
    assert moved.reach(("mail",)).allowed == ("mail",)
