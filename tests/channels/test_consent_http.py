"""Consent routes with memory stores: WeChat's signed unfollow event, the
SMS reply words, a bad unsubscribe signature, an unknown number."""

from __future__ import annotations

import hashlib

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.audience.consent import MemoryConsentStore, unsubscribe_signature
from channels.audience.consent_http import ConsentRoutes, is_opt_out
from channels.audience.directory import MemoryDirectory, address_hash, contact_from
from channels.feedback.events import ListSink
from channels.transports.registry import address_fields

TOKEN = "wechat-token"
CALLBACK = "cb-token"
UNFOLLOW = ("<xml><ToUserName><![CDATA[gh_shop]]></ToUserName>"
            "<FromUserName><![CDATA[o-openid-1]]></FromUserName><CreateTime>1717000000"
            "</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            "<Event><![CDATA[unsubscribe]]></Event></xml>")


def signature(timestamp: str, nonce: str) -> str:
    joined = "".join(sorted([TOKEN, timestamp, nonce]))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()


async def app_with_user() -> tuple[web.Application, ConsentRoutes, ListSink]:
    directory, consent, sink = MemoryDirectory(), MemoryConsentStore(), ListSink()
    await directory.put(contact_from("ann", {"openid": "o-openid-1", "phone": "+8613800000000"}))
    routes = ConsentRoutes(directory, consent, b"secret", sink, CALLBACK, TOKEN,
                           clock=lambda: 1_717_000_000_000, address_fields=address_fields())
    app = web.Application()
    routes.add_routes(app)
    return app, routes, sink


def test_the_reply_words() -> None:
    for word in ("TD", "td", " T ", "退订", "Stop!", "UNSUBSCRIBE", "退订。"):
        assert is_opt_out(word), word
    for word in ("TD please", "hello", "", "stopwatch"):
        assert not is_opt_out(word), word


async def test_a_signed_wechat_unfollow_opts_the_openid_out() -> None:
    app, routes, sink = await app_with_user()
    async with TestClient(TestServer(app)) as client:
        check = await client.get("/inbound/wechat", params={
            "signature": signature("1", "n"), "timestamp": "1", "nonce": "n", "echostr": "e1"})
        assert check.status == 200 and await check.text() == "e1"
        forged = await client.post("/inbound/wechat", params={
            "signature": "0" * 40, "timestamp": "1", "nonce": "n"}, data=UNFOLLOW)
        assert forged.status == 401
        assert await routes.consent.all("ann") == {}
        ok = await client.post("/inbound/wechat", params={
            "signature": signature("2", "m"), "timestamp": "2", "nonce": "m"}, data=UNFOLLOW)
        assert ok.status == 200 and await ok.text() == "success"
    held = await routes.consent.all("ann")
    assert held["wechat:marketing"].granted is False
    assert held["wechat:marketing"].source == "wechat_event"
    assert [(e.kind, e.channel) for e in sink.events] == [("unsubscribed", "wechat")]


async def test_sms_replies_need_the_token_and_unknown_numbers_go_on_the_list() -> None:
    app, routes, _sink = await app_with_user()
    auth = {"Authorization": f"Bearer {CALLBACK}"}
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/inbound/sms/x", json={"from": "1", "text": "TD"})).status \
            == 401
        form = await client.post("/inbound/sms/x", headers=auth,
                                 data={"mobile": "+86 139 0000 0000", "content": "退订"})
        assert await form.json() == {"opted_out": True, "known_user": False}
        chat = await client.post("/inbound/sms/x", headers=auth,
                                 json={"from": "+8613800000000", "text": "thanks"})
        assert await chat.json() == {"opted_out": False}
        bad = await client.get("/unsubscribe/email", params={"u": "ann", "s": "0" * 32})
        assert bad.status == 400
        good = await client.get("/unsubscribe/email", params={
            "u": "ann", "s": unsubscribe_signature(b"secret", "ann", "email")})
        assert good.status == 200 and 'id="unsubscribe"' in await good.text()
    consent = routes.consent
    assert isinstance(consent, MemoryConsentStore)
    assert address_hash("phone", "+8613900000000") in consent.dnc
    assert await consent.all("ann") == {}  # a GET never unsubscribes
