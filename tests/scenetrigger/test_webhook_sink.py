"""The demo's webhook sink over real HTTP: the webhook channel posts to it."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import ClientSession

from channels.base import Message
from channels.transports.retry import RetryPolicy
from channels.transports.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, sign
from scenetrigger.demo.webhook_sink import WebhookSink, serve_sink

SECRET = b"s3cret"


def _message(i: int) -> Message:
    return Message(f"m{i}", f"t{i}", "u1", "cart_abandonment", "webhook", f"subject {i}",
                   "text", None, {"variant": "cart_reminder", "style": "category_browser"}, 1)


async def test_signed_messages_are_kept_forged_ones_refused_duplicates_counted() -> None:
    sink = WebhookSink([SECRET], keep=2)
    served = await serve_sink(sink, "127.0.0.1", 0)
    channel = WebhookChannel("webhook", served.url, SECRET, policy=RetryPolicy(max_attempts=1))
    wrong = WebhookChannel("other", served.url, b"wrong", policy=RetryPolicy(max_attempts=1))
    try:
        results = [await channel.send(_message(i)) for i in range(3)]
        again = await channel.send(_message(2))  # at-least-once: a retry of the same id
        forged = await wrong.send(_message(9))
        async with ClientSession() as session:
            stamp = int(time.time() * 1000)
            async with session.post(served.url, data=b"not json", headers={
                    TIMESTAMP_HEADER: str(stamp),
                    SIGNATURE_HEADER: sign(SECRET, stamp, b"not json")}) as resp:
                bad_body = resp.status
            old = int(time.time() * 1000) - 3_600_000
            body = orjson.dumps({"message_id": "m-old"})
            async with session.post(served.url, data=body, headers={
                    TIMESTAMP_HEADER: str(old), SIGNATURE_HEADER: sign(SECRET, old, body)}) as resp:
                stale = resp.status
    finally:
        await channel.close()
        await wrong.close()
        await served.runner.cleanup()
    assert all(r.ok for r in results) and again.ok
    assert not forged.ok and forged.status == 401 and not forged.retryable
    assert bad_body == 400 and stale == 401  # a replayed old body is refused too
    assert (sink.received, sink.duplicates, sink.rejected) == (3, 1, 3)
    assert [r.message["message_id"] for r in sink.recent] == ["m2", "m1"]  # newest first
    assert sink.recent[0].message["data"]["variant"] == "cart_reminder"


async def test_a_batch_is_taken_whole() -> None:
    sink = WebhookSink([SECRET])
    served = await serve_sink(sink, "127.0.0.1", 0)
    channel = WebhookChannel("webhook", served.url, SECRET, batch_max=3, batch_linger_ms=50)
    try:
        results = await asyncio.gather(*(channel.send(_message(i)) for i in range(3)))
    finally:
        await channel.close()
        await served.runner.cleanup()
    assert all(r.ok for r in results)
    assert sink.received == 3 and {r.message["message_id"] for r in sink.recent} == {
        "m0", "m1", "m2"}
