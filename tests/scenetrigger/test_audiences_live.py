"""Audiences end to end on real Redis, a real SMTP server (aiosmtpd), a real
HTTP SMS provider stand-in and a real headless Chromium: users imported by
the CLI get email with the RFC 8058 headers; the link's page (in the
browser) and the one-click POST stop the next message (``unsubscribed``);
an SMS ``TD`` reply opts the phone out."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from channels.assembly import open_delivery
from channels.feedback.events import ListSink
from config.loader import load_config_text
from config.models import AppConfig
from scenetrigger.cli.main import main
from scenetrigger.cli.run.serve import ServeParts, build_app
from tests.browser import browser
from tests.channels.receivers import Receiver, SmtpSink, running_receiver
from tests.services import free_port
from triggers.events import Trigger

__all__ = ["browser"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
CALLBACK = "callback-token-for-tests"
SECRET = "tracking-secret-for-tests"
T0 = 1_780_000_000_000  # 2026-05-28 20:26 UTC, outside quiet hours in UTC


def config(run: str, smtp_port: int, sms_url: str, base: str) -> AppConfig:
    return load_config_text(f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery:
  redis_prefix: "au{run}:"
  tracking: {{base_url: "{base}"}}
  quiet_hours: {{enabled: false}}
  caps: {{per_day: 100, per_week: 100}}
channels:
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none,
          sender: "Shop <news@shop.example>", postal_address: "Shop Ltd, 1 Main St, Springfield"}}
  sms: {{type: sms, url: "{sms_url}"}}
content:
  scenes:
    promo_arrival:
      variants:
        - name: deals
          products: none
          channels: [mail, sms]
          subject: "Deals for ${{user.first_name}}"
          text: "Hello ${{user.first_name}}, the promo is on."
          html: "<p>Hello ${{user.first_name}}</p>"
""")


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def click_unsubscribe(driver: Any, url: str) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    driver.find_element(By.ID, "unsubscribe").click()
    done = WebDriverWait(driver, 20).until(
        expected_conditions.presence_of_element_located((By.ID, "done")))
    text: str = done.text
    return text


async def test_import_email_unsubscribe_in_browser_one_click_and_sms_td(
        redis_url: str, browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"au{run}:"
    users = tmp_path / "users.csv"
    users.write_text(
        "user_id,email,phone,locale,attr.first_name,consent.sms\n"
        "ann,ann@example.com,,en,Ann,\n"
        "cat,cat@example.com,,en,Cat,\n"
        "bob,,+8613800000001,zh-CN,Bob,yes\n"
        "bad,not-an-address,,,,\n", encoding="utf-8")
    code = await asyncio.to_thread(main, ["users", "import", str(users), "--redis-url",
                                          redis_url, "--prefix", prefix, "--json"])
    report = orjson.loads(capsys.readouterr().out)
    assert code == 2 and report["imported"] == 3 and report["rejected"] == 1
    assert report["rejects"][0]["line"] == 5 and "email" in report["rejects"][0]["reason"]

    monkeypatch.setenv("SCENETRIGGER_TRACKING_SECRET", SECRET)
    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    port = free_port()
    client = Redis.from_url(redis_url, decode_responses=True)
    serve_redis = Redis.from_url(redis_url)  # as `serve` opens it: bytes
    try:
        async with running_receiver(Receiver()) as provider:
            cfg = config(run, smtp.port, provider.url, f"http://127.0.0.1:{port}")
            live = open_delivery(cfg, "live", metrics=CollectorRegistry(), redis=client,
                                 redis_url=redis_url)
            pipe = live.pipeline
            events = ListSink()
            env = {"SCENETRIGGER_TRACKING_SECRET": SECRET,
                   "SCENETRIGGER_CALLBACK_TOKEN": CALLBACK}
            app = build_app(ServeParts(cfg, serve_redis, events, env=env))
            async with serving(app, port) as base, aiohttp.ClientSession() as http:
                async def deliver(user: str, n: int) -> Any:
                    trig = Trigger("promo_arrival", user, f"/promo/{n}", T0 + n)
                    return await pipe.deliver(trig, None, T0 + n)

                first = await deliver("ann", 1)
                assert first.status == "delivered" and first.channel == "mail", first
                _from, rcpt, mail = sink.received[-1]
                assert rcpt == ["ann@example.com"] and mail["Subject"] == "Deals for Ann"
                link = mail["List-Unsubscribe"].strip("<>")
                assert link.startswith(f"{base}/unsubscribe/email?u=ann&s=")
                assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                body = mail.get_body(("plain",))
                assert body is not None and f"Unsubscribe: {link}" in body.get_content()

                shown = await asyncio.to_thread(click_unsubscribe, browser, link)
                assert "unsubscribed" in shown
                after = await deliver("ann", 2)
                assert (after.status, after.reason) == ("suppressed", "unsubscribed")
                assert len(sink.received) == 1

                assert (await deliver("cat", 3)).status == "delivered"
                one_click = sink.received[-1][2]["List-Unsubscribe"].strip("<>")
                async with http.post(one_click, data=b"List-Unsubscribe=One-Click",
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded"}) as resp:
                    assert resp.status == 200 and (await resp.text()).strip() == "unsubscribed"
                cat = await deliver("cat", 4)
                assert (cat.status, cat.reason) == ("suppressed", "unsubscribed")

                texted = await deliver("bob", 5)
                assert texted.status == "delivered" and texted.channel == "sms", texted
                assert orjson.loads(provider.requests[-1].body)["to"] == "+8613800000001"
                async with http.post(f"{base}/inbound/sms/gateway",
                                     json={"from": "+86 138 0000 0001", "text": "TD"},
                                     headers={"Authorization": f"Bearer {CALLBACK}"}) as resp:
                    assert await resp.json() == {"opted_out": True, "known_user": True}
                bob = await deliver("bob", 6)
                assert (bob.status, bob.reason) == ("suppressed", "unsubscribed")
                assert len(provider.requests) == 1

            assert pipe.summary()["suppressed"] == {"unsubscribed": 3}
            changes = [(e.kind, e.user_id, e.channel, e.source) for e in events.events]
            assert changes == [("unsubscribed", "ann", "email", "unsubscribe_link"),
                               ("unsubscribed", "cat", "email", "one_click"),
                               ("unsubscribed", "bob", "sms", "sms_reply")]
            await live.aclose()
    finally:
        smtp.stop()
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await serve_redis.aclose()


async def test_chinese_content_reaches_zh_users_and_english_the_others(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from channels.transports.inbox import InboxStore
    from tests.channels.content_factories import PHONE, catalog

    run = uuid.uuid4().hex[:8]
    prefix = f"al{run}:"
    users = tmp_path / "users.jsonl"
    users.write_text("\n".join(orjson.dumps(row).decode() for row in [
        {"user_id": "li", "locale": "zh-CN"}, {"user_id": "wang", "locale": "zh_TW"},
        {"user_id": "ann", "locale": "en-GB"}, {"user_id": "bob"}]) + "\n", encoding="utf-8")
    assert await asyncio.to_thread(main, ["users", "import", str(users), "--redis-url",
                                          redis_url, "--prefix", prefix]) == 0
    cfg = load_config_text(f"""
scenes:
  cart_abandonment: {{kind: absence, start: {{type: add_to_cart}}, cancel: {{type: purchase}},
                      after: 30m}}
delivery: {{redis_prefix: "{prefix}", quiet_hours: {{enabled: false}}}}
channels:
  inbox: {{type: inbox, key_prefix: "{prefix}inbox"}}
""")
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        live = open_delivery(cfg, "live", metrics=CollectorRegistry(), catalog=catalog(),
                             redis=client, redis_url=redis_url)
        for user in ("li", "wang", "ann", "bob"):
            out = await live.pipeline.deliver(Trigger("cart_abandonment", user, PHONE, T0),
                                              None, T0)
            assert out.status == "delivered" and out.channel == "inbox", out
        await live.aclose()
        inbox = InboxStore(Redis.from_url(redis_url), f"{prefix}inbox")
        subjects = {u: (await inbox.list(u))[0].message["subject"]
                    for u in ("li", "wang", "ann", "bob")}
        await inbox.redis.aclose()
        assert subjects == {"li": "Galaxy A50还在您的购物车里",
                            "wang": "Galaxy A50还在您的购物车里",
                            "ann": "You left Galaxy A50 in your cart",
                            "bob": "You left Galaxy A50 in your cart"}
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
