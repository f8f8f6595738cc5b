"""Erasure finds the user's keys by pattern; a key whose id merely contains the
user's id is someone else's and stays (a journey message id
``j|strategy|v1|bob|entered`` holds ``|v1|``; an id ``v1}x`` starts like ``v1``'s
hash tag)."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from channels.feedback.events import once_key
from channels.policy.decide import caps_key, claim_key
from channels.transports.inbox import inbox_key
from config.channel_models import InboxModel
from config.loader import load_config_text
from scenetrigger.ops.erasure import Eraser

pytestmark = pytest.mark.integration


async def test_keys_that_only_contain_the_id_are_not_the_users(redis_url: str) -> None:
    prefix = f"lk{uuid.uuid4().hex[:8]}:"
    config = load_config_text("scenes: {promo_arrival: {kind: arrival, when: {type: page}}}\n"
                              f'delivery: {{redis_prefix: "{prefix}"}}\n')
    inbox = InboxModel(type="inbox").key_prefix
    client = Redis.from_url(redis_url, decode_responses=True)
    mine = [claim_key(prefix, "promo_arrival|v1|/promo|5", "v1"),
            once_key(prefix, "opened", "promo_arrival|v1|/promo|5|inbox"),
            caps_key(prefix, "v1", "all:d:20000"), inbox_key(inbox, "v1"),
            inbox_key(inbox, "v1") + ":acked"]
    others = [claim_key(prefix, "j|reactivation|v1|bob|entered", "bob"),
              claim_key(prefix, "j|reactivation|v1|v1x|entered", "v1"),  # bob-like, v1's bucket
              once_key(prefix, "opened", "j|reactivation|v1|bob|entered|sms"),
              caps_key(prefix, "v1}:x", "all:d:20000"), inbox_key(inbox, "v1}x")]
    try:
        for key in mine + others:
            await client.set(key, "1")
        found = await Eraser(client, config).find("v1")
        assert sorted(k for k in found.all_keys() if k in mine + others) == sorted(mine)
    finally:
        await client.delete(*mine, *others)
        await client.aclose()
