"""The user directory and consent as the delivery policy sees them (memory
stores): addresses from the directory, ${user.*} in templates, no_address,
unsubscribed, no_consent, do_not_contact, the directory's time zone in quiet
hours, the unsubscribe link and the RFC 8058 headers."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from channels.assembly import DryRunSender, audience_rules, build_pipeline
from channels.audience.consent import ConsentRecord, MemoryConsentStore
from channels.audience.directory import (
    Contact,
    ContactError,
    MemoryDirectory,
    PushToken,
    address_hash,
    contact_from,
    decode,
    encode,
)
from channels.audience.recipient import Audience
from channels.pipeline import DeliveryPipeline
from channels.transports.email import build_email
from config.loader import load_config_text
from config.models import AppConfig
from triggers.errors import ConfigError
from triggers.events import Trigger

NOON = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
CONFIG = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
  order_paid: {kind: arrival, when: {type: purchase}}
delivery:
  tracking: {base_url: "https://t.shop.example"}
  audience: {transactional_scenes: [order_paid]}
  quiet_hours: {start: "22:00", end: "08:00"}
channels:
  mail: {type: email, host: smtp.example, sender: "Shop <news@shop.example>",
         postal_address: "Shop Ltd, 1 Main St, Springfield"}
  sms: {type: sms, url: "https://sms.example/send"}
  app: {type: push, url: "https://push.example/send"}
content:
  scenes:
    promo_arrival:
      variants:
        - name: mail
          products: none
          channels: [mail, sms]
          subject: "Hi ${user.first_name}"
          text: "Deals for ${user.first_name} (${user.tier}) at ${user_id}"
          html: "<p>Hi ${user.first_name}</p>"
    order_paid:
      fallback: {channels: [mail], subject: "Receipt", text: "Thanks"}
"""


def config() -> AppConfig:
    return load_config_text(CONFIG)


def pipeline(directory: MemoryDirectory, consent: MemoryConsentStore,
             cfg: AppConfig | None = None) -> DeliveryPipeline:
    cfg = cfg or config()
    kinds = {name: m.type for name, m in cfg.channels.items()}
    audience = Audience(directory, consent, audience_rules(kinds, cfg.delivery.audience.consent),
                        cfg.delivery.audience.transactional_scenes)
    return build_pipeline(cfg, "live", DryRunSender(), channels=list(cfg.channels),
                          env={"SCENETRIGGER_TRACKING_SECRET": "s3cret"}, audience=audience)


def trigger(user: str, ts: int = NOON, scene: str = "promo_arrival") -> Trigger:
    return Trigger(scene, user, "/promo/1", ts)


def test_records_are_checked_field_by_field() -> None:
    ann = contact_from("ann", {"email": "ann@example.com", "phone": "+86 138 0000 0000",
                               "locale": "zh_CN", "timezone": "Asia/Shanghai",
                               "push": [{"platform": "ios", "token": "t1"},
                                        {"platform": "android", "token": "t2"}],
                               "attributes": {"first_name": "安", "tier": 2}})
    assert ann.locale == "zh-CN" and ann.address_of("push") == "t2"
    assert ann.attributes == {"first_name": "安", "tier": "2"}
    assert decode(encode(ann)) == ann
    cases: list[tuple[dict[str, object], str]] = [
        ({"email": "not an address"}, "email"), ({"phone": "call me"}, "phone"),
                       ({"timezone": "Mars/Base"}, "timezone"), ({"colour": "red"}, "colour"),
                       ({"attributes": {"a b": "x"}}, "attributes"),
                       ({"push": [{"token": "x"}]}, "push")]
    for bad, field in cases:
        with pytest.raises(ContactError, match=field):
            contact_from("bob", bad)
    merged = ann.merged({"phone": None, "attributes": {"tier": None, "vip": "yes"}})
    assert merged.phone is None and merged.attributes == {"first_name": "安", "vip": "yes"}
    assert address_hash("email", " Ann@Example.com") == address_hash("email", "ann@example.com")


async def test_address_and_user_attributes_come_from_the_directory() -> None:
    directory, consent = MemoryDirectory(), MemoryConsentStore()
    await directory.put(contact_from("ann", {"email": "ann@example.com",
                                             "attributes": {"first_name": "Ann", "tier": "gold"}}))
    pipe = pipeline(directory, consent)
    outcome = await pipe.deliver(trigger("ann"), None, NOON)
    assert outcome.status == "delivered" and outcome.channel == "mail", outcome
    message = outcome.message
    assert message is not None
    assert message.data["email"] == "ann@example.com"
    assert message.subject == "Hi Ann" and "Deals for Ann (gold) at ann" in message.text
    url = message.data["unsubscribe_url"]
    # docs/audiences.md's formula, computed here (never through the project's function)
    sig = hmac.new(b"s3cret", b"unsubscribe\nann\nemail", hashlib.sha256).hexdigest()[:32]
    assert url == f"https://t.shop.example/unsubscribe/email?u=ann&s={sig}"
    assert f"Unsubscribe: {url}" in message.text and message.html is not None
    assert 'Unsubscribe</a>' in message.html
    mail = build_email(message, "Shop <news@shop.example>", "ann@example.com")
    assert mail["List-Unsubscribe"] == f"<{url}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_missing_address_is_suppressed_and_counted_not_raised() -> None:
    directory, consent = MemoryDirectory(), MemoryConsentStore()
    await directory.put(Contact("nomail", push=(PushToken("ios", "t"),)))
    pipe = pipeline(directory, consent)
    unknown = await pipe.deliver(trigger("ghost"), None, NOON)
    no_mail = await pipe.deliver(trigger("nomail", NOON + 1), None, NOON + 1)
    assert (unknown.status, unknown.reason) == ("suppressed", "no_address")
    assert (no_mail.status, no_mail.reason) == ("suppressed", "no_address")
    assert pipe.summary()["suppressed"] == {"no_address": 2}


async def test_consent_decides_per_channel_and_purpose() -> None:
    directory, consent = MemoryDirectory(), MemoryConsentStore()
    for user in ("ann", "bob", "cat", "dan"):
        await directory.put(contact_from(user, {"email": f"{user}@example.com",
                                                "phone": "+8613800000000"}))
    await consent.set("ann", "email", "marketing", ConsentRecord(False, 1, "api"))
    await consent.set("bob", "email", "marketing", ConsentRecord(False, 1, "api"))
    await consent.set("bob", "sms", "marketing", ConsentRecord(True, 1, "import"))
    await consent.do_not_contact([address_hash("email", "cat@example.com")], 1, "erasure")
    pipe = pipeline(directory, consent)
    ann = await pipe.deliver(trigger("ann"), None, NOON)
    bob = await pipe.deliver(trigger("bob"), None, NOON)
    cat = await pipe.deliver(trigger("cat"), None, NOON)
    receipt = await pipe.deliver(trigger("ann", scene="order_paid"), None, NOON)
    # ann: email withdrawn, SMS is opt-in by default and never granted.
    assert (ann.status, ann.reason) == ("suppressed", "unsubscribed")
    assert (bob.status, bob.channel) == ("delivered", "sms")  # falls through to SMS
    assert bob.message is not None and bob.message.data["phone"] == "+8613800000000"
    assert "unsubscribe_url" not in bob.message.data
    assert (cat.status, cat.reason) == ("suppressed", "do_not_contact")
    # A transactional message needs no marketing consent and has no unsubscribe link.
    assert receipt.status == "delivered" and receipt.message is not None
    assert "unsubscribe_url" not in receipt.message.data
    audience = pipe.audience
    assert isinstance(audience, Audience)
    dan = await audience.resolve("dan", "marketing", None)
    reach = dan.reach(("sms",))
    assert reach.allowed == () and reach.reason == "no_consent"


async def test_the_directory_time_zone_feeds_quiet_hours() -> None:
    directory, consent = MemoryDirectory(), MemoryConsentStore()
    await directory.put(contact_from("sh", {"email": "sh@example.com",
                                            "timezone": "Asia/Shanghai"}))
    await directory.put(contact_from("utc", {"email": "utc@example.com"}))
    pipe = pipeline(directory, consent)
    late = int(datetime(2026, 6, 1, 15, 0, tzinfo=UTC).timestamp() * 1000)  # 23:00 in Shanghai
    shanghai = await pipe.deliver(trigger("sh", late), None, late)
    utc = await pipe.deliver(trigger("utc", late), None, late)
    assert (shanghai.status, shanghai.reason) == ("deferred", "quiet_hours")
    assert utc.status == "delivered"


def test_a_user_placeholder_is_one_attribute_name_never_a_path() -> None:
    with pytest.raises(ConfigError, match="unknown placeholder"):
        load_config_text(CONFIG.replace("${user.tier}", "${user.tier.__class__}"))
