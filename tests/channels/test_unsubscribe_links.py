"""The unsubscribe / preference link's signature, from the documented formula
(docs/audiences.md: ``hex(HMAC-SHA256(secret, "unsubscribe\\n" + user_id + "\\n"
+ channel_type))[:32]``) computed here with hmac/hashlib, never through the
project's function; and every forged variant refused on GET and POST
(cross-user, cross-channel, cross-purpose, truncated, rotated key, bad)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.audience.consent import MemoryConsentStore, unsubscribe_url
from channels.audience.consent_http import ConsentRoutes
from channels.audience.directory import MemoryDirectory, contact_from
from channels.feedback.events import ListSink
from channels.transports.registry import address_fields

SECRET = b"tracking-secret-for-tests"
Served = tuple[TestClient[web.Request, web.Application], ConsentRoutes, ListSink]
NOW = 1_780_000_000_000
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def documented(secret: bytes, user_id: str, channel_type: str) -> str:
    message = b"unsubscribe\n" + user_id.encode() + b"\n" + channel_type.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


async def serving(secret: bytes = SECRET) -> Served:
    directory, consent, sink = MemoryDirectory(), MemoryConsentStore(), ListSink()
    for user in ("ann", "bob"):
        await directory.put(contact_from(user, {"email": f"{user}@example.com",
                                                "phone": "+8613800000001"}))
    routes = ConsentRoutes(directory, consent, secret, sink, None, clock=lambda: NOW,
                           channel_types=("email", "sms"), address_fields=address_fields())
    app = web.Application()
    routes.add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, routes, sink


def test_the_link_carries_the_documented_signature() -> None:
    url = unsubscribe_url("https://t.shop.example/", SECRET, "ann", "email")
    assert url == ("https://t.shop.example/unsubscribe/email?u=ann&s="
                   + documented(SECRET, "ann", "email"))
    # The channel type is signed: an email link is not an SMS link.
    assert documented(SECRET, "ann", "email") != documented(SECRET, "ann", "sms")


async def test_the_documented_signature_unsubscribes_on_post() -> None:
    client, routes, sink = await serving()
    async with client:
        for channel in ("email", "sms"):
            resp = await client.post(f"/unsubscribe/{channel}", data=ONE_CLICK, params={
                "u": "ann", "s": documented(SECRET, "ann", channel)})
            assert resp.status == 200 and await resp.text() == "unsubscribed\n"
    held = await routes.consent.all("ann")
    assert {k: r.granted for k, r in held.items()} == {"email:marketing": False,
                                                       "sms:marketing": False}
    assert [(e.kind, e.channel, e.source) for e in sink.events] == [
        ("unsubscribed", "email", "one_click"), ("unsubscribed", "sms", "one_click")]


def _forged() -> list[tuple[str, str, str, str]]:
    """(case, channel in the path, query u, s) of links that must be refused."""
    ann_email = documented(SECRET, "ann", "email")
    open_sig = hmac.new(SECRET, b"open\nm-ann-1", hashlib.sha256).hexdigest()[:32]
    click_sig = hmac.new(SECRET, b"m-ann-1\nhttps://shop.example/p/1",
                         hashlib.sha256).hexdigest()[:32]
    flipped = ann_email[:-1] + ("0" if ann_email[-1] != "0" else "1")
    return [
        ("cross-user", "email", "bob", ann_email),
        ("cross-channel", "sms", "ann", ann_email),
        ("cross-purpose: the open pixel's", "email", "ann", open_sig),
        ("cross-purpose: a click link's", "email", "ann", click_sig),
        ("cross-purpose: the inbox token's", "email", "ann",
         hmac.new(SECRET, b"ann", hashlib.sha256).hexdigest()[:32]),
        ("truncated", "email", "ann", ann_email[:16]),
        ("empty", "email", "ann", ""),
        ("rotated key", "email", "ann", documented(b"the-previous-secret", "ann", "email")),
        ("bad signature", "email", "ann", flipped),
        ("all zero", "email", "ann", "0" * 32),
        ("full length", "email", "ann",
         hmac.new(SECRET, b"unsubscribe\nann\nemail", hashlib.sha256).hexdigest()),
    ]


FORGED = _forged()


@pytest.mark.parametrize(("case", "channel", "user", "sig"), FORGED,
                         ids=[case for case, *_ in FORGED])
async def test_a_forged_link_changes_nothing(case: str, channel: str, user: str,
                                             sig: str) -> None:
    client, routes, sink = await serving()
    params = {"u": user, "s": sig}
    async with client:
        page = await client.get(f"/unsubscribe/{channel}", params=params)
        one_click = await client.post(f"/unsubscribe/{channel}", params=params, data=ONE_CLICK)
        forms = [await client.post(f"/unsubscribe/{channel}", params=params,
                                   data={"action": action})
                 for action in ("unsubscribe", "resubscribe", "all")]
        assert [r.status for r in (page, one_click, *forms)] == [400] * 5, case
    assert await routes.consent.all("ann") == {} and await routes.consent.all("bob") == {}
    assert sink.events == []


async def test_a_missing_user_or_signature_or_secret_is_refused() -> None:
    client, _routes, sink = await serving()
    async with client:
        for params in ({"s": documented(SECRET, "", "email")}, {"u": "ann"}, {}):
            resp = await client.post("/unsubscribe/email", params=params, data=ONE_CLICK)
            assert resp.status == 400, params
    unset, _routes_unset, sink_unset = await serving(b"")
    async with unset:
        resp = await unset.post("/unsubscribe/email", data=ONE_CLICK,
                                params={"u": "ann", "s": documented(b"", "ann", "email")})
        assert resp.status == 400  # no secret configured: no link is valid
    assert sink.events == [] and sink_unset.events == []


async def test_a_real_email_link_moved_to_another_channel_is_refused() -> None:
    # The attacker's input is the link a user really got (the project's own
    # builder), its path changed to another channel or its user to another.
    client, routes, sink = await serving()
    link = unsubscribe_url("", SECRET, "ann", "email")
    query = link.split("?", 1)[1]
    async with client:
        for path in (f"/unsubscribe/sms?{query}", f"/unsubscribe/wechat?{query}",
                     f"/unsubscribe/email?{query.replace('u=ann', 'u=bob')}"):
            resp = await client.post(path, data=ONE_CLICK)
            assert resp.status == 400, path
        assert (await client.post(f"/unsubscribe/email?{query}", data=ONE_CLICK)).status == 200
    held = await routes.consent.all("ann")
    assert list(held) == ["email:marketing"] and await routes.consent.all("bob") == {}
    assert [e.channel for e in sink.events] == ["email"]
