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


def test_an_audience_with_consent_none_is_synced_without_ads_consent() -> None:
    """``consent: none`` (docs/ads.md): the sinks check no consent for that
    audience; the do-not-contact list still holds."""
    from channels.ads.build import build_sync
    from config.loader import load_config_text
    from triggers.audiences.record import AudienceChange

    config = load_config_text(
        "scenes: {look: {kind: arrival, when: {type: page}}}\n"
        "delivery: {audience: {consent: {ads: opt_in}}}\n"
        "audiences:\n"
        "  open: {fired: {scene: look, within: 30m}, consent: none}\n"
        "  asked: {fired: {scene: look, within: 30m}}\n"
        "ads: {sinks: {hook: {type: webhook, url: 'http://127.0.0.1:9/x',\n"
        "      secret_env: HOOK_SECRET, audiences: {open: '1', asked: '2'}}}}\n")
    directory = MemoryDirectory()
    directory.users["u1"] = Contact("u1", email="a@x.com")
    consent = MemoryConsentStore()
    sync = build_sync(config, directory, consent, MemorySyncState(), dry_run=True,
                      env={"HOOK_SECRET": "s" * 32})

    async def main() -> list[str]:
        got = [await sync.apply(AudienceChange("open", "u1", "enter", 1.0, "condition")),
               await sync.apply(AudienceChange("asked", "u1", "enter", 1.0, "condition"))]
        await sync.close()
        return got

    assert asyncio.run(main()) == ["added", "no_consent"]
