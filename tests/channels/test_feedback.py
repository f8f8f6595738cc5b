"""Feedback routes on a real aiohttp server on loopback: open pixel, click
redirect without open redirects, token-protected provider callbacks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from channels.feedback.events import (
    PIXEL,
    FeedbackApp,
    FeedbackEvent,
    ListSink,
    MemoryMessageIndex,
    MessageMeta,
    QueueSink,
    RedisMessageIndex,
    open_pixel_path,
    tracked_link,
)

SECRET = b"s3cret-for-tests"
TOKEN = "cb-token"
MID = "m" * 32
Client = TestClient[web.Request, web.Application]


class Engaged:
    def __init__(self) -> None:
        self.users: list[str] = []

    async def __call__(self, user_id: str) -> None:
        self.users.append(user_id)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Client, ListSink, Engaged]]:
    index = MemoryMessageIndex()
    await index.remember(MID, MessageMeta("u1", "cart_abandonment", "email"))
    sink, engaged = ListSink(), Engaged()
    app = FeedbackApp(sink, index, SECRET, TOKEN, ["shop.example.com"], engaged,
                      clock=lambda: 1_000)
    client = TestClient(TestServer(app.application(), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, sink, engaged
    finally:
        await client.close()


async def test_open_pixel_emits_opened_and_resets_backoff(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    client, sink, engaged = setup
    resp = await client.get(open_pixel_path(SECRET, MID))
    assert resp.status == 200 and resp.content_type == "image/gif"
    assert await resp.read() == PIXEL
    assert sink.events == [FeedbackEvent("opened", "u1", 1_000, MID, "email",
                                         "cart_abandonment")]
    assert engaged.users == ["u1"]
    for _ in range(200):  # mail clients fetch again on every view; forgers fetch at will
        again = await client.get(open_pixel_path(SECRET, MID))
        assert again.status == 200 and await again.read() == PIXEL
    for forged in (f"/t/o/{MID}.gif", f"/t/o/{MID}.gif?s=0123", open_pixel_path(b"x", MID)):
        assert (await client.get(forged)).status == 200
    assert len(sink.events) == 1 and engaged.users == ["u1"]  # one open, once
    event = sink.events[0].to_event()
    assert event.type == "opened" and event.fields["source"] == "feedback"


async def test_unknown_message_still_gets_a_pixel_but_no_event(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    client, sink, _ = setup
    resp = await client.get("/t/o/nope.gif")
    assert resp.status == 200 and sink.events == []


async def test_signed_click_redirects_once_and_emits_clicked(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    client, sink, engaged = setup
    target = "https://evil.example.net/landing?x=1"  # not allow-listed, but signed by us
    link = tracked_link("http://ignored", SECRET, MID, target)
    path = link.split("http://ignored", 1)[1]
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == target
    assert [e.kind for e in sink.events] == ["clicked"] and engaged.users == ["u1"]


@pytest.mark.parametrize("target,sig", [
    ("https://evil.example.net/", ""),                 # unsigned, not allowed
    ("https://evil.example.net/", "0" * 32),           # bad signature
    ("javascript:alert(1)", ""),                       # not http(s)
    ("//evil.example.net/", ""),                       # scheme-relative
    ("https://shop.example.com.evil.net/", ""),        # look-alike host
    ("https://evil.example.net\\@shop.example.com/", ""),  # backslash: browsers read "/"
    ("https://evil.example.net/", "\u00e9" * 32),     # non-ASCII signature: 400, not 500
])
async def test_click_never_redirects_to_unsigned_foreign_urls(
        setup: tuple[Client, ListSink, Engaged], target: str, sig: str) -> None:
    client, sink, _ = setup
    resp = await client.get(f"/t/c/{MID}?u={quote(target, safe='')}&s={sig}",
                            allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers
    assert sink.events == []


async def test_signature_is_bound_to_the_message(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    client, _, _ = setup
    target = "https://evil.example.net/"
    other = tracked_link("http://x", SECRET, "another-message", target).split("&s=")[1]
    resp = await client.get(f"/t/c/{MID}?u={quote(target, safe='')}&s={other}",
                            allow_redirects=False)
    assert resp.status == 400


async def test_allow_listed_host_redirects_without_signature(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    client, _, _ = setup
    target = "https://shop.example.com/p/1"
    resp = await client.get(f"/t/c/{MID}?u={quote(target, safe='')}", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == target


async def test_a_click_counts_once_per_message_and_link(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    """Issue 19: 50 unsigned GETs to an allow-listed host made 50 clicks."""
    client, sink, engaged = setup
    for n in range(50):  # unsigned: once per message, however the URL varies
        target = f"https://shop.example.com/p/{n % 7}"
        resp = await client.get(f"/t/c/{MID}?u={quote(target, safe='')}", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == target
    links = [tracked_link("http://x", SECRET, MID, f"https://evil.example.net/{n}").split(
        "http://x", 1)[1] for n in range(2)]
    for path in (*links, *links, *links):
        assert (await client.get(path, allow_redirects=False)).status == 302
    assert [e.kind for e in sink.events] == ["clicked"] * 3  # unsigned, link 0, link 1
    assert engaged.users == ["u1"] * 3
    other = tracked_link("http://x", SECRET, "unknown-message", "https://shop.example.com/")
    assert (await client.get(other.split("http://x", 1)[1], allow_redirects=False)).status == 302
    assert len(sink.events) == 3  # a message nobody sent counts nothing


@pytest.mark.parametrize("target", ["https://shop.example.com:99999/",
                                    "https://shop.example.com:-1/",
                                    "https://shop.example.com:port/"])
async def test_a_malformed_target_is_400_and_no_click(
        setup: tuple[Client, ListSink, Engaged], target: str) -> None:
    client, sink, engaged = setup
    signed = tracked_link("http://x", SECRET, MID, target).split("http://x", 1)[1]
    for path in (f"/t/c/{MID}?u={quote(target, safe='')}", signed):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 400 and "Location" not in resp.headers
    assert sink.events == [] and engaged.users == []


async def test_provider_callback_needs_the_token(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    client, sink, _ = setup
    body = {"message_id": MID, "status": "DELIVRD"}
    assert (await client.post("/callbacks/sms", json=body)).status == 401
    for bad in ({"X-Callback-Token": "x"}, {"Authorization": "Bearer x"},
                {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        resp = await client.post("/callbacks/sms", json=body, headers=bad)
        assert resp.status == 401, bad
    assert sink.events == []
    ok = await client.post("/callbacks/sms", json=[
        body, {"message_id": MID, "status": "failed", "error": "no route", "ts": 5},
        {"message_id": MID, "status": "converted"}, {"message_id": MID, "status": "weird"},
        {"message_id": "unknown", "status": "delivered"}, "junk",
    ], headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200 and (await ok.json())["accepted"] == 3
    assert [(e.kind, e.ts, e.detail) for e in sink.events] == [
        ("delivered", 1_000, None), ("failed", 5, "no route"), ("converted", 1_000, None)]
    header = await client.post("/callbacks/push", data=b"not json",
                               headers={"X-Callback-Token": TOKEN})
    assert header.status == 400  # past the token check


async def test_provider_callback_refuses_a_token_in_the_url(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    """URLs land in access logs and proxies: a query token is refused even
    when it is right, and even beside a good header."""
    client, sink, _ = setup
    body = {"message_id": MID, "status": "delivered"}
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
        resp = await client.post(f"/callbacks/sms?token={TOKEN}", json=body, headers=headers)
        assert resp.status == 401
        assert "Authorization: Bearer" in (await resp.json())["error"]
    assert sink.events == []


async def test_callbacks_are_refused_when_no_token_is_configured() -> None:
    index = MemoryMessageIndex()
    app = FeedbackApp(ListSink(), index, SECRET, None)
    async with TestClient(TestServer(app.application(), host="127.0.0.1")) as client:
        resp = await client.post("/callbacks/sms", json={}, headers={"X-Callback-Token": ""})
        assert resp.status == 401


async def test_queue_sink_feeds_engine_events() -> None:
    queue: asyncio.Queue[object] = asyncio.Queue()
    await QueueSink(queue).emit(FeedbackEvent("clicked", "u1", 7, MID, "inbox", "s"))
    event = queue.get_nowait()
    assert getattr(event, "type", None) == "clicked"
    assert getattr(event, "user_id", None) == "u1"


@pytest.mark.integration
async def test_redis_message_index(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        index = RedisMessageIndex(client, f"t{uuid.uuid4().hex[:8]}:", ttl_ms=60_000)
        await index.remember("abc", MessageMeta("u1", "s", "inbox"))
        assert await index.lookup("abc") == MessageMeta("u1", "s", "inbox")
        assert await index.lookup("nope") is None
        assert await index.first("opened", "abc") and not await index.first("opened", "abc")
        assert await index.first("clicked", "abc", "link-1")
        assert await index.first("clicked", "abc", "link-2")
        assert not await index.first("clicked", "abc", "link-1")
    finally:
        await client.aclose()


async def test_tracking_abuse_gets_4xx_not_500(
        setup: tuple[Client, ListSink, Engaged]) -> None:
    """Issue 11: a click URL urlsplit rejects, a non-UTF-8 token byte and an
    unbounded callback ts were 500s (or overflowed downstream)."""
    client, sink, _ = setup
    bad = "http://[::1"
    resp = await client.get(f"/t/c/{MID}?u={quote(bad, safe='')}&s=00")
    assert resp.status == 400
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST /callbacks/sms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
                 b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    await writer.drain()
    assert (await reader.readline()).split()[1] == b"401"
    writer.close()
    for ts in (1 << 62, -(1 << 62), 10**30):
        resp = await client.post("/callbacks/sms", json={"message_id": MID, "status": "read",
                                                         "ts": ts},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status == 200
    assert [e.ts for e in sink.events] == [1_000, 1_000, 1_000]  # the clock, not the ts
