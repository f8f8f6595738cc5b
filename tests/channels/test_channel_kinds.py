"""Channel types behind one registry (channels/transports/registry.py,
``KINDS``): a new type is one module and its config model
(tests/channels/fax_kind.py). Registered, it is built from its config,
delivered on real Redis with its address read from the directory, and its
consent default applies; no other file names it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.assembly import open_delivery
from channels.audience.consent import ConsentRecord, RedisConsentStore
from channels.audience.directory import RedisDirectory, contact_from
from channels.transports.registry import KINDS, address_fields, consent_defaults
from config.loader import load_config_text
from tests.channels import fax_kind
from tests.channels.fax_kind import FaxChannel, FaxModel
from triggers.events import Trigger

ROOT = Path(__file__).resolve().parents[2]
NOON = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
CONFIG = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
delivery:
  redis_prefix: "PREFIX"
content:
  scenes:
    promo_arrival:
      fallback: {channels: [fx], subject: "Deals", text: "Deals for ${user.first_name}"}
"""


def test_the_shipped_types_are_kinds_with_their_fields_and_defaults() -> None:
    assert list(KINDS) == ["webhook", "inbox", "email", "sms", "wechat", "push", "log"]
    assert address_fields() == {"email": "email", "sms": "phone", "wechat": "openid",
                                "push": "push"}
    defaults = consent_defaults({"email": "opt_in"})
    assert defaults["sms"] == "opt_in" and defaults["email"] == "opt_in"  # the config's wins
    assert defaults["wechat"] == defaults["push"] == defaults["webhook"] == "opt_out"


async def test_a_new_channel_type_is_one_module_and_its_config_model(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "fax", fax_kind.KIND)  # its one entry in the registry
    prefix = f"kind{uuid.uuid4().hex[:8]}:"
    config = load_config_text(CONFIG.replace("PREFIX", prefix))
    client = Redis.from_url(redis_url, decode_responses=True)
    directory, consent = RedisDirectory(client, prefix), RedisConsentStore(client, prefix)
    await directory.put(contact_from("ann", {"attributes": {"fax": "+49 30 1234567",
                                                            "first_name": "Ann"}}))
    await directory.put(contact_from("bob", {"attributes": {"fax": "+49 30 7654321"}}))
    await directory.put(contact_from("cat", {"email": "cat@example.com"}))  # no fax number
    await consent.set("ann", "fax", "marketing", ConsentRecord(True, 1, "import"))
    await consent.set("cat", "fax", "marketing", ConsentRecord(True, 1, "import"))
    delivery = open_delivery(config, "live", redis=client,
                             channels={"fx": FaxModel(type="fax", station="Shop HQ")})
    try:
        pipe = delivery.pipeline
        ann, bob, cat = [await pipe.deliver(Trigger("promo_arrival", user, "/promo/1", NOON),
                                            None, NOON) for user in ("ann", "bob", "cat")]
        assert delivery.registry is not None
        fax = delivery.registry.get("fx")
        assert isinstance(fax, FaxChannel)  # built by its kind, from its config model
        assert (ann.status, ann.channel) == ("delivered", "fx"), ann
        assert fax.sent == [("Shop HQ", "+49 30 1234567", "Deals for Ann")]
        assert (bob.status, bob.reason) == ("suppressed", "no_consent")  # its kind's opt-in
        assert (cat.status, cat.reason) == ("suppressed", "no_address")  # its address field
    finally:
        await delivery.aclose()
        await client.aclose()


def test_no_other_file_names_the_new_type() -> None:
    """Nothing in the product knows of fax: the kind is all it took."""
    sources = [p for package in ("channels", "config", "scenetrigger", "strategies", "agents")
               for p in (ROOT / package).rglob("*.py")]
    assert len(sources) > 100
    naming = [str(p.relative_to(ROOT)) for p in sources if "fax" in p.read_text("utf-8").lower()]
    assert naming == []
