"""Review finding: the erasure receipt was written after the erase event went
out, so a reader that takes the event's effects (the journeys, the profiles
consumer) could meet a record of the erased user before the receipt existed
and write them back. The receipt now comes first. Real Redis; the receipt's
name is computed here from the documented formula (docs/security.md)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from redis.asyncio import Redis

from config.hash_keys import HashKeys
from config.loader import load_config_text
from scenetrigger.ops.erasure import Eraser
from tests.config.test_hash_keys import K1, keyed_subject


@pytest.mark.integration
async def test_the_receipt_is_there_when_the_erase_event_is_sent(redis_url: str) -> None:
    prefix = f"rf{uuid.uuid4().hex[:8]}:"
    name = f"{prefix}erasure:{keyed_subject(K1, 'ann')}"
    client = Redis.from_url(redis_url)
    seen: list[bytes | str | None] = []

    async def forget_in_worker(user_id: str, now_ms: int) -> None:
        seen.append(await client.get(name))

    try:
        config = load_config_text(f"scenes: {{}}\ndelivery: {{redis_prefix: '{prefix}'}}\n")
        receipt = await Eraser(client, config, f"{prefix}t:", forget_in_worker=forget_in_worker,
                               keys=HashKeys(K1.encode())).erase("ann", now_ms=7)
        assert seen[0] is not None, "the erase event went out before the receipt"
        assert orjson.loads(seen[0])["erased_at_ms"] == 7
        assert receipt["engine_state"].startswith("erase event sent")
        assert orjson.loads(await client.get(name) or b"") == receipt
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_a_failed_erase_event_leaves_a_receipt_that_says_it_was_not_sent(
        redis_url: str) -> None:
    """The data is gone and the receipt blocks the readers, but the worker's
    table key is not: the receipt an operator reads says the event is owed."""
    prefix = f"rn{uuid.uuid4().hex[:8]}:"
    name = f"{prefix}erasure:{keyed_subject(K1, 'ann')}"
    client = Redis.from_url(redis_url)

    async def broker_down(user_id: str, now_ms: int) -> None:
        raise ConnectionError("broker down")

    try:
        config = load_config_text(f"scenes: {{}}\ndelivery: {{redis_prefix: '{prefix}'}}\n")
        with pytest.raises(ConnectionError):
            await Eraser(client, config, f"{prefix}t:", forget_in_worker=broker_down,
                         keys=HashKeys(K1.encode())).erase("ann", now_ms=7)
        stored = orjson.loads(await client.get(name) or b"")
        assert (stored["erased_at_ms"], stored["engine_state"]) == (7, "erase event not sent yet")
    finally:
        await client.aclose()
