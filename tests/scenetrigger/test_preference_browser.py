"""The preference centre in a real headless Chromium on a phone-sized
screen, served by ``serve``'s app on real Redis: English and Chinese, the
brand, the masked address, each channel and purpose with its state, and
the buttons doing what they say (a GET alone changes nothing). Screenshots
go to ``$SCENETRIGGER_SCREENSHOT_DIR`` (docs/img holds the committed ones)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from channels.audience.consent import RedisConsentStore
from channels.audience.directory import RedisDirectory, contact_from
from channels.feedback.events import ListSink
from config.loader import load_config_text
from scenetrigger.cli.run.serve import ServeParts, build_app
from tests.browser import browser
from tests.services import free_port

__all__ = ["browser"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
SECRET = "tracking-secret-for-tests"
SHOTS_ENV = "SCENETRIGGER_SCREENSHOT_DIR"

READ = """
const rows = [...document.querySelectorAll('tbody tr')];
return {
  lang: document.documentElement.lang,
  title: document.title,
  brand: document.getElementById('brand').textContent,
  address: (document.getElementById('address') || {}).textContent || '',
  done: (document.getElementById('done') || {}).textContent || '',
  states: Object.fromEntries(rows.map(r => [r.dataset.channel + ':' + r.dataset.purpose,
                                            r.querySelector('td:last-child').className])),
  width: window.innerWidth,
  scrollWidth: document.documentElement.scrollWidth,
  header: getComputedStyle(document.querySelector('header')).backgroundColor,
};
"""


def link(base: str, user: str) -> str:
    sig = hmac.new(SECRET.encode(), f"unsubscribe\n{user}\nemail".encode(),
                   hashlib.sha256).hexdigest()[:32]
    return f"{base}/unsubscribe/email?u={user}&s={sig}"


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def visit(driver: Any, url: str, press: str, shot: Path) -> tuple[dict[str, Any],
                                                                    dict[str, Any]]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    # A phone: a mobile layout viewport is 980 px wide unless the page asks for the device's.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    driver.get(url)
    before = driver.execute_script(READ)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    driver.find_element(By.ID, press).click()
    WebDriverWait(driver, 20).until(
        expected_conditions.presence_of_element_located((By.ID, "done")))
    after = driver.execute_script(READ)
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe  # e.g. a style the CSP refused
    return before, after


async def test_the_preference_centre_in_english_and_chinese(
        redis_url: str, browser: Any, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    config = load_config_text(f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
channels:
  mail: {{type: email, host: 127.0.0.1, sender: "Shop <news@shop.example>",
          postal_address: "Shop Ltd, 1 Main St, Springfield"}}
  sms: {{type: sms, url: "http://127.0.0.1:9/sms"}}
delivery:
  redis_prefix: "pc{run}:"
  preferences: {{name: "Lotus Home 莲花家居", color: "#0b7a75"}}
""")
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    client = Redis.from_url(redis_url)
    prefix = f"pc{run}:"
    try:
        directory, consent = RedisDirectory(client, prefix), RedisConsentStore(client, prefix)
        await directory.put(contact_from("ann", {"email": "ann.lee@example.com",
                                                 "phone": "+447700900123", "locale": "en-GB"}))
        await directory.put(contact_from("li", {"email": "li.wei@example.cn",
                                                "phone": "+8613800000001", "locale": "zh-CN"}))
        events = ListSink()
        app = build_app(ServeParts(config, client, events,
                                   env={"SCENETRIGGER_TRACKING_SECRET": SECRET}))
        async with serving(app, free_port()) as base:
            en, en_done = await asyncio.to_thread(
                visit, browser, link(base, "ann"), "unsubscribe",
                shots / "preference-centre-en.png")
            zh, zh_done = await asyncio.to_thread(
                visit, browser, link(base, "li"), "unsubscribe-all",
                shots / "preference-centre-zh.png")
        for page in (en, zh):
            assert page["width"] == 390 and page["scrollWidth"] <= 390, page  # the viewport
            assert page["brand"] == "Lotus Home 莲花家居"
            assert page["header"] == "rgb(11, 122, 117)"  # the configured colour
            assert page["states"] == {"email:marketing": "on", "email:transactional": "on",
                                      "sms:marketing": "not_asked", "sms:transactional": "on"}
        assert (en["lang"], en["title"]) == ("en", "Your message preferences")
        assert en["address"] == "Preferences for a***@example.com"
        assert (zh["lang"], zh["title"]) == ("zh", "消息订阅设置")
        assert zh["address"] == "l***@example.cn 的订阅设置"
        assert en_done["done"].startswith("You are unsubscribed")
        assert en_done["states"]["email:marketing"] == "off"
        assert en_done["states"]["sms:marketing"] == "not_asked"
        assert zh_done["done"] == "您已退订所有渠道的全部优惠。"
        assert {k: v for k, v in zh_done["states"].items() if k.endswith("marketing")} == \
            {"email:marketing": "off", "sms:marketing": "off"}
        held = {u: {k: (r.granted, r.source) for k, r in (await consent.all(u)).items()}
                for u in ("ann", "li")}
        assert held == {"ann": {"email:marketing": (False, "unsubscribe_link")},
                        "li": {"email:marketing": (False, "preference_centre"),
                               "sms:marketing": (False, "preference_centre")}}
        assert [(e.user_id, e.kind, e.channel) for e in events.events] == [
            ("ann", "unsubscribed", "email"), ("li", "unsubscribed", "email"),
            ("li", "unsubscribed", "sms")]
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
