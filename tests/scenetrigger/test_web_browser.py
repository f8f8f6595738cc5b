"""The live page in a real headless Chromium, served by a running demo."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scenetrigger.demo_process import DemoProcess, start_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCENES = {"repeat_view_no_purchase", "cart_abandonment", "promo_arrival"}
SCREENSHOT_ENV = "SCENETRIGGER_SCREENSHOT"  # keep the screenshot here (default: a tmp dir)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def demo() -> Iterator[DemoProcess]:
    process = start_demo("--speed", "600", "--duration", "120")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} missing: run scripts/run-tests.sh (installs them) "
            "or apt-get install -y chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,900",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=os.devnull),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_live_page_shows_triggers_and_counts(demo: DemoProcess, browser: Any,
                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    assert demo.url is not None
    browser.get(demo.url)
    assert browser.title == "scenetrigger demo"
    counts: dict[str, int] = {}
    rows: list[Any] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        cards = browser.find_elements(By.CSS_SELECTOR, "#scenes .scene-count")
        counts = {c.get_attribute("data-scene"): int(c.find_element(By.CLASS_NAME, "count").text)
                  for c in cards}
        rows = browser.find_elements(By.CSS_SELECTOR, "#triggers tbody tr")
        if set(counts) == SCENES and all(n > 0 for n in counts.values()) and len(rows) >= 3:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"page never filled: counts={counts} rows={len(rows)}\n"
                             f"{demo.output()}")
    assert browser.find_element(By.ID, "status").text == "live"
    assert not browser.find_element(By.ID, "empty").is_displayed()
    first = rows[0].find_elements(By.TAG_NAME, "td")
    assert first[1].text in SCENES
    assert first[2].text.startswith("u")
    assert first[3].text in {"search-driven shopper", "category browser", "promo hunter",
                             "cart abandoner", "loyal buyer"}
    assert "[" in first[5].text  # [channel] subject
    # Data is written as text: no element came from the data (CSP allows only our script).
    assert browser.find_elements(By.CSS_SELECTOR, "#triggers tbody script, #triggers tbody img") == []
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors
    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "demo-page.png")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
