"""The preference centre behind the signed link: branded and localised (en,
zh shipped, others by config), the masked address and each channel and
purpose with its state; a GET changes nothing; the form unsubscribes,
resubscribes the link's channel, or unsubscribes from all."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.audience.consent import MemoryConsentStore
from channels.audience.consent_http import ConsentRoutes
from channels.audience.directory import MemoryDirectory, contact_from
from channels.audience.preference_page import mask_address
from channels.feedback.events import ListSink
from channels.transports.registry import address_fields, consent_defaults
from config.preference_models import PreferencesModel

SECRET = b"tracking-secret-for-tests"
Served = tuple[TestClient[web.Request, web.Application], ConsentRoutes, ListSink]
NOW = 1_780_000_000_000
BRAND = PreferencesModel(name="Shop", logo_url="https://cdn.shop.example/logo.png",
                         color="#c2185b", locales={"fr": {"title": "Vos préférences"}})


def link(user: str, channel: str = "email") -> str:
    sig = hmac.new(SECRET, f"unsubscribe\n{user}\n{channel}".encode(),
                   hashlib.sha256).hexdigest()[:32]
    return f"/unsubscribe/{channel}?u={user}&s={sig}"


async def serving(model: PreferencesModel = BRAND) -> Served:
    directory, consent, sink = MemoryDirectory(), MemoryConsentStore(), ListSink()
    await directory.put(contact_from("ann", {"email": "ann.lee@example.com",
                                             "phone": "+8613800000001", "locale": "en"}))
    await directory.put(contact_from("li", {"email": "li@example.cn", "locale": "zh-CN"}))
    routes = ConsentRoutes(directory, consent, SECRET, sink, None, clock=lambda: NOW,
                           preferences=model, channel_types=("email", "sms", "inbox"),
                           defaults=consent_defaults(), address_fields=address_fields())
    app = web.Application()
    routes.add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, routes, sink


def states(page: str) -> dict[str, str]:
    rows = re.findall(r'data-channel="(\w+)" data-purpose="(\w+)">.*?<td class="(\w+)">',
                      page)
    return {f"{c}:{p}": s for c, p, s in rows}


def test_masked_addresses() -> None:
    assert mask_address("email", "ann.lee@example.com") == "a***@example.com"
    assert mask_address("email", "a@b.example") == "a***@b.example"
    assert mask_address("sms", "+8613800000001") == "+86***0001"
    assert mask_address("email", None) == ""


async def test_the_page_shows_brand_address_channels_and_changes_nothing() -> None:
    client, routes, sink = await serving()
    async with client:
        resp = await client.get(link("ann"))
        page = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
    assert resp.status == 200 and resp.headers["Content-Language"] == "en"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<h1 id="brand">Shop</h1>' in page and "#c2185b" in page
    assert '<img src="https://cdn.shop.example/logo.png"' in page
    assert "Preferences for a***@example.com" in page and "ann.lee" not in page
    assert states(page) == {"email:marketing": "on", "email:transactional": "on",
                            "sms:marketing": "not_asked", "sms:transactional": "on",
                            "inbox:marketing": "on", "inbox:transactional": "on"}
    assert 'id="unsubscribe"' in page and 'id="unsubscribe-all"' in page
    # No script, no inline style but the page's own (allowed by its hash).
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None and "<script" not in page
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp and "unsafe-inline" not in csp
    assert "img-src https://cdn.shop.example" in csp and "default-src 'none'" in csp
    assert await routes.consent.all("ann") == {} and sink.events == []  # a GET changes nothing


@pytest.mark.parametrize(("user", "query", "accept", "lang", "title"), [
    ("li", "", "", "zh", "消息订阅设置"),  # the user's locale
    ("ann", "&lang=zh", "", "zh", "消息订阅设置"),  # asked for
    ("ann", "", "zh-CN,zh;q=0.9", "en", "Your message preferences"),  # the user's own first
    ("ann", "&lang=fr", "", "fr", "Vos préférences"),  # configured, English where unset
    ("ann", "&lang=xx", "", "en", "Your message preferences"),
])
async def test_the_language(user: str, query: str, accept: str, lang: str, title: str) -> None:
    client, _routes, _sink = await serving()
    async with client:
        resp = await client.get(link(user) + query, headers={"Accept-Language": accept})
        page = await resp.text()
    assert resp.headers["Content-Language"] == lang and f'<html lang="{lang}">' in page
    assert f"<title>{title}</title>" in page


async def test_unsubscribe_resubscribe_and_all() -> None:
    client, routes, sink = await serving()
    async with client:
        done = await (await client.post(link("li"), data={"action": "unsubscribe"})).text()
        assert 'id="done"' in done and "您已退订" in done and 'id="resubscribe"' in done
        assert states(done)["email:marketing"] == "off"
        again = await (await client.post(link("li"), data={"action": "resubscribe"})).text()
        assert states(again)["email:marketing"] == "on" and 'id="unsubscribe"' in again
        everything = await (await client.post(link("li"), data={"action": "all"})).text()
        assert {k: v for k, v in states(everything).items() if k.endswith(":marketing")} == \
            {"email:marketing": "off", "sms:marketing": "off", "inbox:marketing": "off"}
        bad = await client.post(link("li"), data={"action": "delete_me"})
        assert bad.status == 400
    held = await routes.consent.all("li")
    assert {k: (r.granted, r.source) for k, r in held.items()} == {
        "email:marketing": (False, "preference_centre"),
        "sms:marketing": (False, "preference_centre"),
        "inbox:marketing": (False, "preference_centre")}
    assert [(e.kind, e.channel, e.source) for e in sink.events] == [
        ("unsubscribed", "email", "unsubscribe_link"),
        ("subscribed", "email", "preference_centre"),
        ("unsubscribed", "email", "preference_centre"),
        ("unsubscribed", "sms", "preference_centre"),
        ("unsubscribed", "inbox", "preference_centre")]


def test_unknown_text_keys_and_default_language_are_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown text key"):
        PreferencesModel(locales={"fr": {"titel": "x"}})
    with pytest.raises(ValueError, match="default_locale"):
        PreferencesModel(default_locale="de")
    with pytest.raises(ValueError, match="color"):
        PreferencesModel(color="red;}body{display:none")
