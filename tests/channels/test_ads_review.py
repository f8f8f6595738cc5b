"""Ads consent is the ``ads`` type's marketing consent: another purpose's
record (an admin ``PUT /users/{id}/consent/ads`` with ``purpose:
transactional``) says nothing about ad audiences."""

from __future__ import annotations

import asyncio

from channels.ads.state import MemorySyncState
from channels.ads.sync import AudienceSync
from channels.audience.consent import ConsentRecord, MemoryConsentStore
from channels.audience.directory import Contact, MemoryDirectory


def _sync(consent: MemoryConsentStore, default: str = "opt_out") -> AudienceSync:
    return AudienceSync({}, {}, MemoryDirectory(), consent, MemorySyncState(), default)


def test_a_withdrawn_ads_marketing_consent_wins_over_a_transactional_grant() -> None:
    consent = MemoryConsentStore()
    consent.records["u1"] = {"ads:transactional": ConsentRecord(True, 1, "api"),
                             "ads:marketing": ConsentRecord(False, 2, "api")}
    contact = Contact("u1", email="a@x.com")
    assert asyncio.run(_sync(consent).may_sync("u1", contact)) == "no_consent"


def test_a_transactional_grant_is_no_opt_in_for_ads() -> None:
    consent = MemoryConsentStore()
    consent.records["u1"] = {"ads:transactional": ConsentRecord(True, 1, "api")}
    contact = Contact("u1", email="a@x.com")
    assert asyncio.run(_sync(consent, "opt_in").may_sync("u1", contact)) == "no_consent"
    consent.records["u1"]["ads:marketing"] = ConsentRecord(True, 2, "api")
    assert asyncio.run(_sync(consent, "opt_in").may_sync("u1", contact)) is None
