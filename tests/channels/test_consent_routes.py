"""The consent routes' edges (channels.audience.consent_http): the SMS reply's
field names, body limit and refusals, WeChat's plain-text fields and the
events that are not an unfollow, a route without a WeChat token, the form's
default action, and the consent stream's every call. Signatures and hashes
are computed here (hashlib), never through the project's functions."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.audience.consent import ConsentRecord, MemoryConsentStore
from channels.audience.consent_http import ConsentRoutes, StreamedConsent, is_opt_out
from channels.audience.directory import MemoryDirectory, contact_from
from channels.feedback.events import FeedbackEvent, ListSink
from channels.transports.registry import address_fields

SECRET = b"secret-for-routes"
TOKEN = "wechat-token"
CALLBACK = "cb-token"
AUTH = {"Authorization": f"Bearer {CALLBACK}"}
NOW = 1_717_000_000_000
LIMIT = 64 * 1024  # the documented body limit of every inbound POST
Served = tuple[TestClient[web.Request, web.Application], ConsentRoutes, ListSink]


def wechat_query(timestamp: str, nonce: str, token: str = TOKEN) -> dict[str, str]:
    joined = "".join(sorted([token, timestamp, nonce]))
    sig = hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()
    return {"signature": sig, "timestamp": timestamp, "nonce": nonce}


def link(user: str, channel: str) -> str:
    sig = hmac.new(SECRET, f"unsubscribe\n{user}\n{channel}".encode(),
                   hashlib.sha256).hexdigest()[:32]
    return f"/unsubscribe/{channel}?u={user}&s={sig}"


def sms_hash(number: str) -> str:
    # docs/audiences.md: sha256 of "phone\n" + the number without spaces,
    # brackets and dashes.
    normal = "".join(c for c in number.strip() if c not in " ()-")
    return hashlib.sha256(f"phone\n{normal}".encode()).hexdigest()


async def serving(wechat_token: str | None = TOKEN,
                  channel_types: tuple[str, ...] = ("email",)) -> Served:
    directory, consent, sink = MemoryDirectory(), MemoryConsentStore(), ListSink()
    await directory.put(contact_from("ann", {"openid": "o-ann", "phone": "+8613800000000",
                                             "email": "ann@example.com"}))
    routes = ConsentRoutes(directory, consent, SECRET, sink, CALLBACK, wechat_token,
                           clock=lambda: NOW, channel_types=channel_types,
                           address_fields=address_fields())
    app = web.Application()
    routes.add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, routes, sink


def held(routes: ConsentRoutes) -> MemoryConsentStore:
    assert isinstance(routes.consent, MemoryConsentStore)
    return routes.consent


async def test_sms_sender_and_text_field_names_and_their_order() -> None:
    client, routes, sink = await serving()
    async with client:
        for body in ({"phone": "+8613800000000", "message": "stop"},
                     {"from": "", "mobile": "+8613800000000", "text": "", "content": "TD"},
                     {"from": "+8613800000000", "mobile": "+8613900000009", "text": "T"}):
            resp = await client.post("/inbound/sms/p", headers=AUTH, json=body)
            assert await resp.json() == {"opted_out": True, "known_user": True}, body
    assert await routes.consent.all("ann") == {
        "sms:marketing": ConsentRecord(False, NOW, "sms_reply")}
    assert held(routes).dnc == {}  # the first field that is set names the sender
    assert [(e.kind, e.user_id, e.ts, e.channel, e.source) for e in sink.events] == [
        ("unsubscribed", "ann", NOW, "sms", "sms_reply")] * 3


async def test_sms_refusals_say_why() -> None:
    client, routes, _sink = await serving()
    async with client:
        listed = await client.post("/inbound/sms/p", headers=AUTH, json=["TD"])
        assert listed.status == 400
        assert await listed.json() == {"error": "body must be an object"}
        nobody = await client.post("/inbound/sms/p", headers=AUTH, json={"text": "TD"})
        assert nobody.status == 400
        assert await nobody.json() == {"error": "no sender number (from)"}
        wrong = await client.post("/inbound/sms/p", headers={"Authorization": "Bearer x"},
                                  json={"from": "+8613800000000", "text": "TD"})
        assert wrong.status == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert await wrong.text() == "bad token"
    assert await routes.consent.all("ann") == {} and held(routes).dnc == {}


async def test_an_unknown_number_goes_on_the_list_with_the_time_and_source() -> None:
    client, routes, sink = await serving()
    async with client:
        resp = await client.post("/inbound/sms/p", headers=AUTH,
                                 json={"from": "+86 (139) 0000-0000", "text": "退订"})
        assert await resp.json() == {"opted_out": True, "known_user": False}
    assert held(routes).dnc == {sms_hash("+86 (139) 0000-0000"): (NOW, "sms_reply")}
    assert sink.events == []


async def test_the_sms_body_is_read_up_to_the_limit() -> None:
    client, routes, _sink = await serving()
    head = "from=%2B8613800000000&pad="
    async with client:
        # "&text=STOP" ends exactly at the limit: read; one byte further: cut
        # to "STO", which is no opt-out word.
        inside = head + "x" * (LIMIT - len(head) - len("&text=STOP")) + "&text=STOP"
        outside = head + "x" * (LIMIT - len(head) - len("&text=STOP") + 1) + "&text=STOP"
        assert len(inside) == LIMIT
        cut = await client.post("/inbound/sms/p", headers=AUTH, data=outside.encode())
        assert await cut.json() == {"opted_out": False}
        assert await routes.consent.all("ann") == {}
        read = await client.post("/inbound/sms/p", headers=AUTH, data=inside.encode())
        assert await read.json() == {"opted_out": True, "known_user": True}


def event(openid: str, kind: str, name: str, cdata: bool = True) -> str:
    def field(tag: str, value: str) -> str:
        return f"<{tag}><![CDATA[{value}]]></{tag}>" if cdata else f"<{tag}> {value}\n</{tag}>"
    return ("<xml>" + field("ToUserName", "gh_shop") + field("FromUserName", openid)
            + field("MsgType", kind) + field("Event", name) + "</xml>")


async def test_wechat_plain_fields_and_events_that_are_not_an_unfollow() -> None:
    client, routes, sink = await serving()
    async with client:
        for body in (event("o-ann", "event", "subscribe"),
                     event("o-ann", "text", "unsubscribe"),
                     event("", "event", "unsubscribe"),
                     event("o-stranger", "event", "unsubscribe"),
                     "<xml><MsgType>event</MsgType><Event>unsubscribe</Event></xml>"):
            resp = await client.post("/inbound/wechat", params=wechat_query("1", "n"), data=body)
            assert resp.status == 200 and await resp.text() == "success", body
        assert await routes.consent.all("ann") == {} and sink.events == []
        plain = event("o-ann", "event", "UNSUBSCRIBE", cdata=False)
        resp = await client.post("/inbound/wechat", params=wechat_query("2", "m"), data=plain)
        assert await resp.text() == "success"
    assert await routes.consent.all("ann") == {
        "wechat:marketing": ConsentRecord(False, NOW, "wechat_event")}


async def test_the_wechat_body_is_read_up_to_the_limit() -> None:
    client, routes, _sink = await serving()
    # The Event field last (no closing </xml>): a cut of one byte breaks it.
    body = event("o-ann", "event", "unsubscribe").removesuffix("</xml>")
    async with client:
        past = ("<!--" + "x" * (LIMIT - len(body) - 6) + "-->").encode() + body.encode()
        assert len(past) == LIMIT + 1
        await client.post("/inbound/wechat", params=wechat_query("1", "n"), data=past)
        assert await routes.consent.all("ann") == {}
        within = ("<!--" + "x" * (LIMIT - len(body) - 7) + "-->").encode() + body.encode()
        await client.post("/inbound/wechat", params=wechat_query("1", "n"), data=within)
    assert list(await routes.consent.all("ann")) == ["wechat:marketing"]


async def test_without_a_wechat_token_every_wechat_call_is_refused() -> None:
    client, routes, _sink = await serving(wechat_token=None)
    async with client:
        for query in (wechat_query("1", "n", token=""), {}):
            check = await client.get("/inbound/wechat", params={**query, "echostr": "e"})
            assert check.status == 401 and await check.text() == "bad signature"
            post = await client.post("/inbound/wechat", params=query,
                                     data=event("o-ann", "event", "unsubscribe"))
            assert post.status == 401
    assert await routes.consent.all("ann") == {}


async def test_the_server_check_echoes_nothing_when_no_echostr() -> None:
    client, _routes, _sink = await serving()
    async with client:
        resp = await client.get("/inbound/wechat", params=wechat_query("1", "n"))
        assert resp.status == 200 and await resp.text() == ""


async def test_the_form_default_action_and_refusals() -> None:
    client, routes, sink = await serving(channel_types=("sms", "email", "sms"))
    async with client:
        page = await client.post(link("ann", "email"), data={"note": "x"})
        assert page.status == 200 and page.headers["Cache-Control"] == "no-store"
        assert page.headers["Content-Type"].startswith("text/html")
        not_one_click = await client.post(link("ann", "sms"),
                                          data={"List-Unsubscribe": "One-Click-Later"})
        assert not_one_click.status == 200 and await not_one_click.text() != "unsubscribed\n"
        bad = await client.post(link("ann", "email"), data={"action": "erase"})
        assert bad.status == 400
        assert await bad.text() == "action must be one of unsubscribe, resubscribe, all\n"
        forged = await client.get("/unsubscribe/email?u=ann&s=" + "f" * 32)
        assert await forged.text() == "this unsubscribe link is not valid\n"
        everything = await client.post(link("ann", "inbox"), data={"action": "all"})
        assert everything.status == 200
    assert [(e.channel, e.source) for e in sink.events] == [
        ("email", "unsubscribe_link"), ("sms", "unsubscribe_link"),
        # the link's channel first, then each configured type once
        ("inbox", "preference_centre"), ("sms", "preference_centre"),
        ("email", "preference_centre")]
    assert routes.channel_types == ("sms", "email")


async def test_a_recorded_change_is_returned_and_streamed() -> None:
    _client, routes, sink = await serving()
    change = await routes.record("ann", "push", "transactional", True, "api")
    assert change == ConsentRecord(True, NOW, "api")
    assert await routes.consent.all("ann") == {"push:transactional": change}
    assert sink.events == [FeedbackEvent("subscribed", "ann", NOW, "", "push", "",
                                         "transactional", source="api")]
    await _client.close()


async def test_the_stream_passes_every_call_through() -> None:
    inner, sink = MemoryConsentStore(), ListSink()
    stream = StreamedConsent(inner, sink)
    await stream.set("ann", "sms", "marketing", ConsentRecord(False, 5, "import"))
    assert await stream.all("ann") == {"sms:marketing": ConsentRecord(False, 5, "import")}
    assert sink.events == [FeedbackEvent("unsubscribed", "ann", 5, "", "sms", "", "marketing",
                                         source="import")]
    await stream.do_not_contact(["h1"], 9, "erasure")
    assert inner.dnc == {"h1": (9, "erasure")}
    assert await stream.blocked(["h1", "h2"]) == [True, False]
    assert await stream.forget("ann") is True and await stream.forget("ann") is False
    assert inner.records == {}


def test_reply_words_with_surrounding_marks() -> None:
    assert is_opt_out("  stop!! ") and is_opt_out("T.") and is_opt_out("退订！")
    assert is_opt_out("退订。") and is_opt_out("TD!。")
    # Only spaces and . ! 。 ！ are trimmed: "XTD" or "TD?" is no opt-out.
    for text in ("st op", "!", "XTD", "TDX", "TD?", "-stop"):
        assert not is_opt_out(text), text


async def test_the_page_rows_default_to_the_links_channel_and_email() -> None:
    routes = ConsentRoutes(MemoryDirectory(), MemoryConsentStore(), SECRET, ListSink(), None)
    assert routes.channel_types == ("email",)
    assert routes.defaults == {} and routes.address_fields == {}


async def test_bodies_that_are_not_utf8_are_read_with_replacement() -> None:
    client, routes, sink = await serving()
    async with client:
        click = await client.post(link("ann", "email"),
                                  data=b"junk=\xff\xfe&List-Unsubscribe=One-Click")
        assert click.status == 200 and await click.text() == "unsubscribed\n"
        sms = await client.post("/inbound/sms/p", headers=AUTH,
                                data=b"from=%2B8613800000000&note=\xff&text=TD")
        assert await sms.json() == {"opted_out": True, "known_user": True}
        wechat = await client.post("/inbound/wechat", params=wechat_query("1", "n"),
                                   data=b"\xff" + event("o-ann", "event", "unsubscribe").encode())
        assert await wechat.text() == "success"
    assert sorted(await routes.consent.all("ann")) == ["email:marketing", "sms:marketing",
                                                       "wechat:marketing"]
    assert len(sink.events) == 3


async def test_a_link_without_its_user_is_no_link_for_any_user() -> None:
    client, routes, sink = await serving()
    async with client:
        for user in ("", "XXXX", "None"):
            sig = hmac.new(SECRET, f"unsubscribe\n{user}\nemail".encode(),
                           hashlib.sha256).hexdigest()[:32]
            resp = await client.post("/unsubscribe/email", params={"s": sig},
                                     data={"List-Unsubscribe": "One-Click"})
            assert resp.status == 400, user
    assert sink.events == [] and held(routes).records == {}


async def test_the_page_for_a_user_the_directory_does_not_know() -> None:
    client, routes, sink = await serving()
    async with client:
        resp = await client.get(link("zed", "email"))
        page = await resp.text()
    assert resp.status == 200 and "Preferences for" not in page and "@" not in page
    assert await routes.consent.all("zed") == {} and sink.events == []


async def test_the_page_language_from_accept_language() -> None:
    client, _routes, _sink = await serving()  # ann has no locale
    async with client:
        zh = await client.get(link("ann", "email"), headers={"Accept-Language": "zh-CN,en"})
        plain = await client.get(link("ann", "email"))
    assert zh.headers["Content-Language"] == "zh" and plain.headers["Content-Language"] == "en"


async def test_a_wechat_call_without_timestamp_or_nonce_signs_them_as_empty() -> None:
    # WeChat's formula over what was sent: a missing field is the empty string.
    client, _routes, _sink = await serving()
    sig = hashlib.sha1("".join(sorted([TOKEN, "", ""])).encode(),
                       usedforsecurity=False).hexdigest()
    async with client:
        resp = await client.get("/inbound/wechat", params={"signature": sig, "echostr": "e"})
        assert resp.status == 200 and await resp.text() == "e"
        only_nonce = hashlib.sha1("".join(sorted([TOKEN, "", "n"])).encode(),
                                  usedforsecurity=False).hexdigest()
        resp = await client.get("/inbound/wechat", params={"signature": only_nonce, "nonce": "n"})
        assert resp.status == 200
        only_ts = hashlib.sha1("".join(sorted([TOKEN, "7", ""])).encode(),
                               usedforsecurity=False).hexdigest()
        resp = await client.get("/inbound/wechat", params={"signature": only_ts, "timestamp": "7"})
        assert resp.status == 200


async def test_a_wechat_event_without_an_openid_names_nobody() -> None:
    client, routes, _sink = await serving()
    await routes.directory.put(contact_from("odd", {"openid": "XXXX"}))
    async with client:
        resp = await client.post("/inbound/wechat", params=wechat_query("1", "n"),
                                 data="<xml><MsgType>event</MsgType><Event>unsubscribe</Event></xml>")
        assert await resp.text() == "success"
    assert await routes.consent.all("odd") == {}
