"""Audience sync, unit level: identifiers against hashlib and the documented
rules, batch ids, the membership decoder, retries and the rate limit with a
fake client, clock and sleep (no waiting, no timing)."""

from __future__ import annotations

import asyncio
import hashlib

import orjson
import pytest

from channels.ads.http import RateLimiter
from channels.ads.identifiers import Style, hashed_email, hashed_phone, international_digits
from channels.ads.membership import MembershipError, decode_record, read_jsonl
from channels.ads.sink import Batch, BatchingSink, HashedMember, Member, batch_id
from channels.transports.retry import Attempt, RetryPolicy
from triggers.audiences.record import AudienceChange, AudienceTombstone


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_email_and_phone_follow_each_platforms_rules() -> None:
    assert hashed_email("meta", "  Ann.Lee+x@Example.COM ") == sha("ann.lee+x@example.com")
    assert hashed_email("google_ads", " Ann@Example.com") == sha("ann@example.com")
    assert hashed_email("tiktok", "Ann.Lee+promo@Example.com") == sha("ann.lee@example.com")
    assert hashed_phone("meta", "+1 (650) 555-1234", None) == sha("16505551234")
    assert hashed_phone("tiktok", "+1 (650) 555-1234", None) == sha("16505551234")
    assert hashed_phone("google_ads", "+1 (650) 555-1234", None) == sha("+16505551234")
    assert hashed_phone("meta", "0086 138 0013 8000", None) == sha("8613800138000")
    assert hashed_phone("meta", "013800138000", "86") == sha("8613800138000")
    assert hashed_phone("google_ads", "13800138000", "86") == sha("+8613800138000")


def test_a_number_without_a_country_code_is_not_sent_when_none_is_configured() -> None:
    assert international_digits("13800138000", None) is None
    assert international_digits("+12", None) is None  # too short for E.164
    assert hashed_phone("meta", None, "86") is None


def test_batch_ids_come_from_the_content() -> None:
    a, b = HashedMember("u1", sha("a"), None), HashedMember("u2", None, sha("b"))
    assert batch_id("meta", "1", "add", [a, b]) == batch_id("meta", "1", "add", [b, a])
    assert batch_id("meta", "1", "add", [a, b]) != batch_id("meta", "1", "remove", [a, b])
    assert batch_id("meta", "1", "add", [a]) != batch_id("meta", "2", "add", [a])


def test_membership_records_are_read_strictly() -> None:
    value = orjson.dumps({"audience": "a", "user_id": "u", "op": "enter", "ts": 1.5,
                          "reason": "r"})
    found = decode_record(b"a|u", value)
    assert found == AudienceChange("a", "u", "enter", 1.5, "r") and found.key == b"a|u"
    # a tombstone (an erasure): the key names the audience and the user
    assert decode_record(b"a|u|x", None) == AudienceTombstone("a", "u|x")
    for bad in (b"a", b"|u", None):
        with pytest.raises(MembershipError):
            decode_record(bad, None)
    with pytest.raises(MembershipError, match="key"):
        decode_record(b"a|v", value)
    with pytest.raises(MembershipError, match="op"):
        decode_record(None, value.replace(b"enter", b"join"))
    lines = [b'{"kind": "trigger", "user_id": "u"}',
             b'{"kind": "audience", "audience": "a", "user_id": "u", "op": "exit", "ts": 2}',
             b"{not json", b'{"kind": "audience", "audience": "a", "op": "exit", "ts": 2}']
    read = list(read_jsonl(iter(lines)))
    assert [n for n, _ in read] == [2, 3, 4]
    assert isinstance(read[1][1], MembershipError) and isinstance(read[2][1], MembershipError)


class ScriptedClient:
    """Answers from ``script`` (then OK); records the batches."""

    style: Style = "meta"

    def __init__(self, script: list[Attempt]) -> None:
        self.script = script
        self.sent: list[Batch] = []

    async def send(self, batch: Batch) -> Attempt:
        self.sent.append(batch)
        return self.script.pop(0) if self.script else Attempt(True, status=200)

    async def close(self) -> None:
        return None


def _sink(script: list[Attempt], sleeps: list[float], attempts: int = 4) -> BatchingSink:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return BatchingSink("meta", ScriptedClient(script), max_items=2, linger_ms=1_000,
                        limiter=RateLimiter(1000.0, 100, clock=lambda: 0.0, sleep=sleep),
                        policy=RetryPolicy(attempts, 100, 1_000, 30_000), sleep=sleep)


def test_429_waits_for_retry_after_and_5xx_backs_off_then_the_same_batch_goes() -> None:
    sleeps: list[float] = []
    sink = _sink([Attempt(False, "HTTP 429", True, 429, 2_000),
                  Attempt(False, "HTTP 503", True, 503)], sleeps)

    async def main() -> None:
        await sink.add("1", [Member("u1", "a@x.com"), Member("u2", "b@x.com")])  # full: sent

    asyncio.run(main())
    client = sink.client
    assert isinstance(client, ScriptedClient)
    assert len(client.sent) == 3 and len({b.batch_id for b in client.sent}) == 1
    # Retry-After, then full jitter under the second retry's ceiling (100 ms * 2)
    assert sleeps[0] == 2.0 and 0 <= sleeps[1] <= 0.2
    assert [r.ok for r in sink.results] == [True] and sink.pending() == 0


def test_a_batch_out_of_attempts_is_kept_and_a_4xx_is_not_retried() -> None:
    sleeps: list[float] = []
    busy = Attempt(False, "HTTP 503", True, 503)
    sink = _sink([busy, busy, Attempt(False, "HTTP 400", False, 400)], sleeps, attempts=2)

    async def main() -> None:
        await sink.add("1", [Member("u1", "a@x.com")])
        first = await sink.flush()
        assert first[0].requeued and sink.pending() == 1  # nothing lost
        second = await sink.flush()
        assert not second[0].ok and not second[0].requeued and sink.pending() == 0

    asyncio.run(main())
    client = sink.client
    assert isinstance(client, ScriptedClient) and len(client.sent) == 3


def test_the_newest_wish_wins_and_members_without_identifiers_are_skipped() -> None:
    sink = _sink([], [])

    async def main() -> None:
        await sink.add("1", [Member("u1", "a@x.com")])
        await sink.remove("1", [Member("u1", "a@x.com")])
        await sink.add("1", [Member("u3", None, "123")])  # no country code: nothing to send
        assert sink.pending() == 2
        await sink.flush()

    asyncio.run(main())
    client = sink.client
    assert isinstance(client, ScriptedClient)
    assert [(b.op, [m.user_id for m in b.members]) for b in client.sent] == [("remove", ["u1"])]
    assert sink.skipped == 1


def test_due_only_flush_waits_for_the_linger() -> None:
    now = [0.0]
    sink = _sink([], [])
    sink.clock = lambda: now[0]

    async def main() -> None:
        await sink.add("1", [Member("u1", "a@x.com")])
        assert await sink.flush(due_only=True) == []
        now[0] = 1.0
        assert len(await sink.flush(due_only=True)) == 1

    asyncio.run(main())


def test_the_rate_limiter_asks_to_wait_once_the_burst_is_spent() -> None:
    sleeps: list[float] = []
    now = [0.0]

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, 2, clock=lambda: now[0], sleep=sleep)

    async def main() -> None:
        for _ in range(4):
            await limiter.acquire()

    asyncio.run(main())
    assert sleeps == [0.5, 0.5]


def test_forgetting_a_user_without_contact_points_says_what_was_not_removed() -> None:
    from channels.ads.state import MemorySyncState
    from channels.ads.sync import AudienceSync
    from channels.audience.consent import MemoryConsentStore
    from channels.audience.directory import MemoryDirectory
    from config.hash_keys import HashKeys

    state = MemorySyncState()
    sink = _sink([], [])
    sync = AudienceSync({"meta": sink}, {"meta": {"a": "1"}}, MemoryDirectory(),
                        MemoryConsentStore(), state, keys=HashKeys(b"x" * 32))

    async def main() -> dict[str, object]:
        await state.mark("gone", "meta", "a", 5)
        return await sync.forget("gone", "erasure", now_ms=9)

    receipt = asyncio.run(main())
    assert receipt["complete"] is False
    assert receipt["not_removed"] == [{"sink": "meta", "audience": "a"}]
    assert "gone" not in orjson.dumps(receipt).decode()


def test_the_state_says_synced_only_once_the_platform_took_the_batch() -> None:
    from channels.ads.state import MemorySyncState
    from channels.ads.sync import AudienceSync
    from channels.audience.consent import MemoryConsentStore
    from channels.audience.directory import Contact, MemoryDirectory
    from triggers.audiences.record import AudienceChange

    directory = MemoryDirectory()
    directory.users["u1"] = Contact("u1", email="a@x.com")
    state = MemorySyncState()
    sink = _sink([Attempt(False, "HTTP 400", False, 400)], [])
    sync = AudienceSync({"meta": sink}, {"meta": {"a": "1"}}, directory,
                        MemoryConsentStore(), state)
    enter = AudienceChange("a", "u1", "enter", 1.0, "condition")

    async def main() -> list[str]:
        seen = [await sync.apply(enter)]
        await sync.drain()  # refused for good: not synced
        seen.append(str(await state.synced("u1")))
        seen.append(await sync.apply(enter))  # so the next read sends it again
        await sync.drain()
        seen.append(str(await state.synced("u1")))
        seen.append(await sync.apply(AudienceChange("a", "u1", "exit", 2.0, "condition")))
        seen.append(await sync.apply(enter))  # back in before the exit went out
        await sync.drain()
        seen.append(str(await state.synced("u1")))
        return seen

    assert asyncio.run(main()) == ["added", "{}", "added", "{'meta|a': 1000}", "removed",
                                   "added", "{'meta|a': 1000}"]
    client = sink.client
    assert isinstance(client, ScriptedClient)
    assert [b.op for b in client.sent] == ["add", "add", "add"]  # the exit never left


def test_a_consent_withdrawn_elsewhere_removes_the_member_at_their_next_record() -> None:
    from channels.ads.state import MemorySyncState
    from channels.ads.sync import AudienceSync
    from channels.audience.consent import ConsentRecord, MemoryConsentStore
    from channels.audience.directory import Contact, MemoryDirectory
    from triggers.audiences.record import AudienceChange

    directory = MemoryDirectory()
    directory.users["u1"] = Contact("u1", email="a@x.com")
    consent, state = MemoryConsentStore(), MemorySyncState()
    sink = _sink([], [])
    sync = AudienceSync({"meta": sink}, {"meta": {"a": "1"}}, directory, consent, state)
    enter = AudienceChange("a", "u1", "enter", 1.0, "condition")

    async def main() -> list[str]:
        seen = [await sync.apply(enter)]
        await sync.drain()
        consent.records["u1"] = {"ads:marketing": ConsentRecord(False, 2, "cli")}
        seen.append(await sync.apply(enter))  # the compacted topic read again
        await sync.drain()
        seen.append(str(await state.synced("u1")))
        return seen

    assert asyncio.run(main()) == ["added", "no_consent", "{}"]
    client = sink.client
    assert isinstance(client, ScriptedClient)
    assert [b.op for b in client.sent] == ["add", "remove"]
