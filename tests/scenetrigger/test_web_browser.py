"""The live page in a real headless Chromium, served by a running demo."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_config
from scenetrigger.demo.content import BuiltinContent
from scenetrigger.demo.page import serve
from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.runtime.replay import new_engine
from tests.browser import browser
from tests.scenetrigger.demo_process import DemoProcess, start_demo

SCENES = {"repeat_view_no_purchase", "cart_abandonment", "promo_arrival"}
SCREENSHOT_ENV = "SCENETRIGGER_SCREENSHOT"  # keep the screenshot here (default: a tmp dir)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
__all__ = ["browser"]  # the fixture, used by the tests below


@pytest.fixture
def demo() -> Iterator[DemoProcess]:
    process = start_demo("--speed", "600", "--duration", "120")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


# The page re-renders every second: read what it shows in one go (no stale elements).
READ_PAGE = """
const cards = [...document.querySelectorAll('#scenes .scene-count')];
const rows = [...document.querySelectorAll('#triggers tbody tr')];
return {
  counts: Object.fromEntries(cards.map(c => [c.dataset.scene,
                                             Number(c.querySelector('.count').textContent)])),
  rows: rows.map(r => [...r.querySelectorAll('td')].map(td => td.innerText)),
  injected: document.querySelectorAll('#triggers tbody script, #triggers tbody img').length,
  status: document.getElementById('status').textContent,
  emptyShown: !document.getElementById('empty').hidden,
};
"""


def test_live_page_shows_triggers_and_counts(demo: DemoProcess, browser: Any,
                                             tmp_path: Path) -> None:
    assert demo.url is not None
    browser.get(demo.url)
    assert browser.title == "scenetrigger demo"
    page: dict[str, Any] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        page = browser.execute_script(READ_PAGE)
        counts = page["counts"]
        if set(counts) == SCENES and all(n > 0 for n in counts.values()) and len(
                page["rows"]) >= 3:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"page never filled: {page}\n{demo.output()}")
    assert page["status"] == "live" and not page["emptyShown"]
    for cells in page["rows"]:
        assert len(cells) == 6
        assert cells[1].split("\n")[0] in SCENES
        assert cells[2].startswith("u")
        assert cells[3] in {"search-driven shopper", "category browser", "promo hunter",
                            "cart abandoner", "loyal buyer"}
        assert "-dry-run] " in cells[5] and "variant " in cells[5]
    # Data is written as text: nothing from the data became an element.
    assert page["injected"] == 0
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors
    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "demo-page.png")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


HOSTILE_USER = '<img src=x onerror="window.pwned=1">'
HOSTILE_PAGE = "/promo/<script>window.pwned=2</script>"


@pytest.fixture
def hostile_page_url() -> Iterator[str]:
    """A runtime whose only event carries markup in its fields, served in a thread."""
    events = [{"user_id": HOSTILE_USER, "ts": 1_700_000_000_000, "type": "page",
               "page": HOSTILE_PAGE}]
    ready = threading.Event()
    held: dict[str, Any] = {}

    async def main() -> None:
        runtime = EmbeddedRuntime(new_engine(load_config()), events,
                                  start_ms=1_700_000_000_000, speed=60, content=BuiltinContent())
        served = await serve(runtime, "127.0.0.1", 0)
        held.update(url=served.url, runtime=runtime, loop=asyncio.get_running_loop())
        ready.set()
        try:
            await runtime.run(duration_seconds=150)
        finally:
            await served.runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(30):
        pytest.fail("the in-process demo server did not start")
    try:
        yield str(held["url"])
    finally:
        held["loop"].call_soon_threadsafe(held["runtime"].stop)
        thread.join(30)


def test_markup_in_the_data_is_shown_as_text(hostile_page_url: str, browser: Any) -> None:
    browser.get(hostile_page_url)
    page: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = browser.execute_script(READ_PAGE)
        if page["rows"]:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no row: {page}")
    cells = page["rows"][0]
    assert cells[2] == HOSTILE_USER and cells[4] == HOSTILE_PAGE
    assert HOSTILE_PAGE in cells[5]
    assert page["injected"] == 0
    assert browser.execute_script("return window.pwned === undefined") is True


READ_DELIVERY = """
const text = (sel) => [...document.querySelectorAll(sel)].map(r => [...r.querySelectorAll('td')]
  .map(td => td.innerText));
return {
  shown: !document.getElementById('delivery').hidden,
  counts: document.getElementById('webhook-counts').textContent,
  label: document.getElementById('messages-label').textContent,
  hooks: text('#webhook-messages tbody tr'),
  inboxes: text('#inbox-users tbody tr'),
  injected: document.querySelectorAll('#delivery tbody script, #delivery tbody img').length,
};
"""


def test_live_delivery_shows_what_the_webhook_and_the_inboxes_received(
        redis_url: str, browser: Any) -> None:
    demo = start_demo("--deliver", "live", "--redis-url", redis_url, "--webhook-port", "0",
                      "--speed", "600", "--duration", "120", "--strategies", "none")
    try:
        browser.get(demo.wait_ready())
        page: dict[str, Any] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            page = browser.execute_script(READ_DELIVERY)
            if page["shown"] and len(page["hooks"]) >= 2 and len(page["inboxes"]) >= 2:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no live delivery shown: {page}\n{demo.output()}")
    finally:
        demo.stop()
    assert page["label"] == "messages sent (live)"
    assert re.match(r"\d+ received, 0 rejected, 0 duplicates · http://127\.0\.0\.1:\d+/hook$",
                    page["counts"]), page
    personas = {"search-driven shopper", "category browser", "promo hunter", "cart abandoner",
                "loyal buyer"}
    for cells in page["hooks"]:  # received, user, persona, scene, message
        assert len(cells) == 5 and cells[1].startswith("u") and cells[2] in personas
        assert cells[3] in SCENES and "variant " in cells[4]
    for cells in page["inboxes"]:  # user, persona, messages read back from Redis
        assert len(cells) == 3 and cells[1] in personas
        assert "[repeat_view_no_purchase] " in cells[2] and "variant " in cells[2]
    assert page["injected"] == 0
