"""An on-site slot in a real headless Chromium: ``serve``'s demo page with
the snippet (``/slots.js``) shows the ``home`` slot for a search-driven
visitor, the visitor's behaviour changes (the worker writes a newer, promo-
driven live profile) and the next page view shows hot deals; each view's
beacon is one impression (docs/ads.md, "On-site slots")."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from channels.audience.live_profile import LiveProfileStore
from channels.content.catalog import MemoryCatalog
from channels.feedback.events import ListSink
from channels.redis_client import redis_client
from config.loader import load_config_text
from config.tokens import SLOT_SECRET_ENV
from scenetrigger.cli.run.serve import ServeParts, build_app
from tests.browser import browser
from tests.channels.content_factories import PHONE, PHONES, T0, catalog_products, user_state
from tests.channels.slot_fixtures import config_text, hot_ids
from tests.scenetrigger.test_preference_browser import serving
from tests.services import free_port

__all__ = ["browser"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
SLOT_SECRET, TRACKING = "slot-secret-for-tests", "tracking-secret-for-tests"

READ = """
const box = document.getElementById('home');
return {variant: box.getAttribute('data-variant'), error: box.getAttribute('data-error'),
        title: (box.querySelector('.st-title') || {}).textContent || '',
        products: [...box.querySelectorAll('.st-name')].map(a => a.textContent),
        links: [...box.querySelectorAll('a.st-name')].map(a => a.href)};
"""


def page_view(driver: Any, url: str, variant: str) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(READ)["variant"] == variant
        or d.execute_script(READ)["error"])
    seen: dict[str, Any] = driver.execute_script(READ)
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
              and "/favicon.ico" not in e.get("message", "")]  # the demo has no icon
    assert severe == [], severe  # e.g. a script the CSP refused
    return seen


async def test_the_slot_changes_when_the_visitor_turns_promo_driven(
        redis_url: str, browser: Any) -> None:
    prefix = f"sb{uuid.uuid4().hex[:6]}:"
    # max_age 0: the next view asks again (with 30s the browser keeps the answer 30 s)
    config = load_config_text(config_text(prefix).replace("max_age: 30s", "max_age: 0s"))
    client = redis_client(redis_url)
    sink = ListSink()
    names = {p.product_id: p.name for p in catalog_products()}
    try:
        profiles = LiveProfileStore(client, prefix)
        assert await profiles.put("ann", user_state("ann", "search_driven").profile, T0)
        app = build_app(ServeParts(config, client, sink, tags_prefix=prefix,
                                   env={SLOT_SECRET_ENV: SLOT_SECRET,
                                        config.delivery.tracking.secret_env: TRACKING},
                                   slot_catalog=MemoryCatalog(catalog_products()),
                                   slots_demo=True))
        # docs/security.md: hex(HMAC-SHA256(secret, "slot\n" + user + "\n" + str(exp)))
        exp = int(time.time()) + 3600
        sig = hmac.new(SLOT_SECRET.encode(), f"slot\nann\n{exp}".encode(),
                       hashlib.sha256).hexdigest()
        async with serving(app, free_port()) as base:
            url = f"{base}/slots-demo.html?user=ann&exp={exp}&sig={sig}"
            before = await asyncio.to_thread(page_view, browser, url, "searcher")
            assert await profiles.put("ann", user_state("ann", "promo_driven").profile,
                                      T0 + 60_000)
            after = await asyncio.to_thread(page_view, browser, url, "hot_deals")
            for _ in range(200):  # the beacons arrive after the page shows the slot
                if len(sink.events) >= 2:
                    break
                await asyncio.sleep(0.05)
        assert before["variant"] == "searcher" and before["error"] is None
        assert before["title"] == "Still looking for galaxy a50?"
        assert before["products"] == [names[PHONE]]
        assert before["links"][0].startswith(f"{base}/t/c/{quote('slot:home:searcher:')}")
        assert after["variant"] == "hot_deals"
        assert after["products"] == [names[i] for i in hot_ids(2, PHONES)]
        assert [(e.kind, e.user_id, e.variant) for e in sink.events] == [
            ("delivered", "ann", "searcher"), ("delivered", "ann", "hot_deals")]
    finally:
        await client.aclose()
