"""The do-not-contact hits a Recipient read keeps beside the user's record
(channels.audience.recipient.RedisReader) and an address two users share:
an entry added for it must reach both users' next decisions (the list's
generation, raised by every addition, outdates every kept hit). Real Redis."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from channels.assembly import audience_rules
from channels.audience.consent import RedisConsentStore
from channels.audience.directory import RedisDirectory, address_hash, contact_from
from channels.audience.recipient import Audience, RedisReader
from config.hash_keys import HashKeys

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
KEYS = HashKeys(b"r" * 32)


async def test_a_shared_address_put_on_the_list_blocks_both_users_at_once(
        redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    prefix = f"rcpr{uuid.uuid4().hex[:8]}:"
    directory, consent = RedisDirectory(redis, prefix), RedisConsentStore(redis, prefix, KEYS)
    audience = Audience(directory, consent, audience_rules({"mail": "email"}))
    assert isinstance(audience.reader, RedisReader)
    await directory.put(contact_from("ann", {"email": "family@example.com"}))
    await directory.put(contact_from("bob", {"email": "family@example.com"}))  # the index: bob
    assert (await audience.resolve("ann", "marketing", None)).blocked == frozenset()
    await consent.do_not_contact([address_hash("email", "family@example.com")], 2, "erasure")
    bob = await audience.resolve("bob", "marketing", None)
    assert bob.blocked == frozenset({"email"})  # the indexed owner: cleared, looked up again
    ann = await audience.resolve("ann", "marketing", None)
    try:
        assert ann.reach(("mail",)).reason == "do_not_contact"
    finally:
        await redis.aclose()
