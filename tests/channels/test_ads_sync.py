"""Audience sync against local Meta, Google Ads, TikTok and webhook servers
(real sockets, the platforms' documented request and error shapes): the
right hashed identifiers arrive in batches, exits and ads unsubscribes
remove, a 429 storm loses nothing, and no identifier reaches a log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from channels.ads.build import DryRunClient, build_sync
from channels.ads.sink import BatchingSink
from channels.ads.state import MemorySyncState
from channels.ads.sync import AdsConsentWatch, AudienceSync
from channels.audience.consent import ConsentRecord, MemoryConsentStore
from channels.audience.directory import Contact
from config.hash_keys import HashKeys
from tests.adplatforms.google import FakeGoogle
from tests.adplatforms.webhook import FakeHook
from tests.channels.ads_fixtures import (
    AUDIENCE,
    ENV,
    Platforms,
    ads_config,
    contact_of,
    directory_of,
    expected_row,
    four_platforms,
)
from triggers.audiences.record import AudienceChange

NAMES = ("meta", "google", "tiktok", "hook")
KEYS = HashKeys(b"k" * 32)


def sync_for(platforms: Platforms, contacts: list[Contact], consent: MemoryConsentStore,
             batch_max: int = 10, dry_run: bool = False) -> AudienceSync:
    sync = build_sync(ads_config(platforms.by_name, batch_max), directory_of(contacts),
                      consent, MemorySyncState(), dry_run=dry_run, env=ENV)
    sync.keys = KEYS
    return sync


def enter(user: str, ts: float = 1.0) -> AudienceChange:
    return AudienceChange(AUDIENCE, user, "enter", ts, "scene viewed")


async def _run(platforms: Platforms, sync: AudienceSync, users: list[str]) -> None:
    for user in users:
        await sync.apply(enter(user))
    await sync.drain()


def test_each_platform_gets_the_documented_hashes_in_batches() -> None:
    contacts = [contact_of(n) for n in range(25)]

    async def main() -> None:
        async with four_platforms() as platforms:
            sync = sync_for(platforms, contacts, MemoryConsentStore())
            await _run(platforms, sync, [c.user_id for c in contacts])
            for name in NAMES:
                want = {expected_row(name, c) for c in contacts}
                assert platforms.members(name) == want, name
            meta_sizes = [r.members for r in sync.sinks["meta"].results]  # type: ignore[attr-defined]
            assert meta_sizes == [10, 10, 5]
            assert len(platforms.by_name["meta"].requests) == 3
            google = platforms.by_name["google"]
            assert [r["path"].rsplit(":", 1)[-1] for r in google.requests][:3] == [
                "create", "addOperations", "run"]
            hook = platforms.by_name["hook"]
            assert isinstance(hook, FakeHook) and hook.bad_signatures == 0
            await sync.close()

    asyncio.run(main())


def test_exit_removes_only_where_synced_and_consent_is_asked() -> None:
    contacts = [contact_of(n) for n in range(6)]
    consent = MemoryConsentStore()
    consent.records["u1"] = {"ads:marketing": ConsentRecord(False, 1, "api")}

    async def main() -> None:
        async with four_platforms() as platforms:
            sync = sync_for(platforms, contacts, consent)
            await _run(platforms, sync, [c.user_id for c in contacts])
            assert sync.outcomes["no_consent"] == 1
            await sync.apply(AudienceChange(AUDIENCE, "u2", "exit", 2.0, "bought"))
            await sync.apply(AudienceChange(AUDIENCE, "u1", "exit", 2.0, "bought"))
            await sync.drain()
            assert sync.outcomes["not_synced"] == 1  # u1 never went out
            for name in NAMES:
                want = {expected_row(name, c) for c in contacts if c.user_id not in ("u1", "u2")}
                assert platforms.members(name) == want, name
                assert platforms.by_name[name].removed[
                    next(iter(platforms.by_name[name].members))] == [
                    expected_row(name, contacts[2])]
            await sync.close()

    asyncio.run(main())


def test_an_ads_unsubscribe_removes_the_user_on_every_platform() -> None:
    contacts = [contact_of(n) for n in range(8)]
    consent = MemoryConsentStore()

    async def main() -> None:
        async with four_platforms() as platforms:
            sync = sync_for(platforms, contacts, consent)
            await _run(platforms, sync, [c.user_id for c in contacts])
            watch = AdsConsentWatch(
                consent, lambda user, contact, ts: sync.forget(user, "ads_unsubscribe", contact, ts))
            await watch.set("u3", "ads", "marketing", ConsentRecord(False, 5_000, "api"))
            for name in NAMES:
                row = expected_row(name, contacts[3])
                assert row not in platforms.members(name), name
                assert row in platforms.by_name[name].removed[
                    next(iter(platforms.by_name[name].members))], name
            receipt = watch.receipts[0]
            assert receipt["complete"] is True
            assert sorted(r["sink"] for r in receipt["removed_from"]) == sorted(NAMES)
            assert await sync.state.synced("u3") == {}
            # an email-only unsubscribe is not an ads one
            await watch.set("u4", "email", "marketing", ConsentRecord(False, 5_000, "api"))
            assert len(watch.receipts) == 1
            # and once withdrawn, a new enter is refused
            assert await sync.apply(enter("u3", 9.0)) == "no_consent"
            await sync.close()

    asyncio.run(main())


def test_a_429_storm_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    contacts = [contact_of(n) for n in range(120)]
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        async with four_platforms(storm_rate=0.5) as platforms:
            sync = sync_for(platforms, contacts, MemoryConsentStore(), batch_max=7)
            for contact in contacts:
                await sync.apply(enter(contact.user_id))
            await sync.drain(rounds=50)
            assert sync.pending() == 0
            for name in NAMES:
                platform = platforms.by_name[name]
                assert platform.storm.throttled > 5, name  # the storm did blow
                want = {expected_row(name, c) for c in contacts}
                assert platforms.members(name) == want, name
                accepted = platform.added[next(iter(platform.members))]
                assert len(accepted) == len(contacts), name  # each member once: no duplicate
            await sync.close()

    asyncio.run(main())
    text = caplog.text
    assert "ads batch" in text  # the sync did log
    for contact in contacts:
        for raw in (contact.email, contact.phone):
            if raw:
                assert raw.strip() not in text
                assert raw.strip().lower() not in text
        if contact.phone:
            digits = "".join(ch for ch in contact.phone if ch.isdigit())
            assert digits not in text


def test_dry_run_builds_the_batches_and_sends_nothing() -> None:
    contacts = [contact_of(n) for n in range(5)]

    async def main() -> None:
        async with four_platforms() as platforms:
            sync = sync_for(platforms, contacts, MemoryConsentStore(), dry_run=True)
            await _run(platforms, sync, [c.user_id for c in contacts])
            for name in NAMES:
                assert platforms.by_name[name].requests == []
                sink = sync.sinks[name]
                assert isinstance(sink, BatchingSink) and isinstance(sink.client, DryRunClient)
                rows = {(m.email or "", m.phone or "") for b in sink.client.sent
                        for m in b.members}
                assert rows == {expected_row(name, c) for c in contacts}
            await sync.close()

    asyncio.run(main())


def test_each_platforms_error_body_fails_the_batch_with_its_words() -> None:
    contacts = [contact_of(n) for n in range(3)]
    wrong = {**ENV, "META_TOKEN": "x", "GOOGLE_TOKEN": "x", "TIKTOK_TOKEN": "x",
             "HOOK_SECRET": "x"}
    words = {"meta": "Meta error 190", "google": "UNAUTHENTICATED",
             "tiktok": "TikTok code 40105", "hook": "HTTP 401"}

    async def main() -> None:
        async with four_platforms() as platforms:
            sync = build_sync(ads_config(platforms.by_name), directory_of(contacts),
                              MemoryConsentStore(), MemorySyncState(), env=wrong)
            for contact in contacts:
                await sync.apply(enter(contact.user_id))
            results = await sync.drain()
            for name in NAMES:
                (result,) = [r for r in results if r.sink == name]
                assert not result.ok and not result.requeued and result.attempts == 1, name
                assert words[name] in (result.error or ""), (name, result.error)
                assert platforms.members(name) == set()
            assert await sync.state.synced("u0") == {}  # refused: not marked synced
            await sync.close()

    asyncio.run(main())


def test_a_google_partial_failure_still_runs_the_job() -> None:
    contacts = [contact_of(n) for n in range(4)]

    async def main() -> None:
        async with four_platforms() as platforms:
            google = platforms.by_name["google"]
            assert isinstance(google, FakeGoogle)
            refused = expected_row("google", contacts[1])
            google.refuse = {h for h in refused if h}
            sync = sync_for(platforms, contacts, MemoryConsentStore())
            await _run(platforms, sync, [c.user_id for c in contacts])
            assert platforms.members("google") == {
                expected_row("google", c) for n, c in enumerate(contacts) if n != 1}
            (result,) = [r for r in sync.sinks["google"].results]  # type: ignore[attr-defined]
            assert not result.ok and "partial failure" in (result.error or "")
            assert all(job.status == "SUCCESS" for job in google.jobs.values())
            await sync.close()

    asyncio.run(main())
