"""The operator console in a real headless Chromium, served by a running
``scenetrigger console`` replaying the rees46 sample: the rates move while
it runs, the per-user views (recent decisions, user lookup) are refused
without the admin token and a user lookup with it shows the explain
timeline, admin actions are refused
without the token, a bad config shows its error with scene and field, a good
one validates and its what-if runs, and an erase answers with its receipt."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import browser
from tests.paths import REES46_SAMPLE
from tests.scenetrigger.test_explain import CONFIG
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
__all__ = ["browser"]
TOKEN = "console-test-token"
EARLY_USER = "512558158"  # a trigger at 00:01 of the sample, decided at once
BAD = "scenes:\n  broken: {kind: repeat, when: {type: view}, count: 3, within: 5x}\n"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "console.yaml"
    config.write_text(CONFIG)
    port = free_port()
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "console", "--events", str(REES46_SAMPLE),
             "--rate", "150", "--config", str(config), "--port", str(port),
             "--config-store", str(tmp_path / "versions")],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SCENETRIGGER_ADMIN_TOKEN": TOKEN})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"console did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
        assert code == 0, log.read_text()


def _until(what: str, check: Callable[[], Any], timeout_s: float = 60,
           shown: Callable[[], Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}" +
                         (f"; the page shows {shown()!r}" if shown is not None else ""))


def _chart_total(browser: Any) -> int:
    raw = browser.execute_script(
        "return document.getElementById('trigger-chart').dataset.total || '0'")
    return int(raw)


def _admin_result(browser: Any) -> tuple[str, str]:
    text, status = browser.execute_script(
        "const el = document.getElementById('admin-result');"
        "return [el.textContent, el.dataset.status || ''];")
    return str(text), str(status)


def _admin(browser: Any, button: str, text: str | None, token: str) -> tuple[str, str]:
    before = _admin_result(browser)
    browser.execute_script(
        "document.getElementById('token').value = arguments[0];"
        "if (arguments[1] !== null) document.getElementById('config-text').value = arguments[1];",
        token, text)
    browser.find_element("id", button).click()
    got: tuple[str, str] = _until(f"{button} answered", lambda: (
        now := _admin_result(browser)) != before and now[0] != "…" and now, 60)
    return got


def test_console_shows_rates_lookup_and_admin(console: str, browser: Any) -> None:
    browser.get(console)
    assert browser.title == "scenetrigger console"
    first = _until("the trigger chart drawn", lambda: _chart_total(browser))
    _until("the rates to move", lambda: _chart_total(browser) > first)
    assert browser.find_elements("css selector", "#trigger-chart canvas")  # uPlot drew it
    rows = browser.find_elements("css selector", "#scene-totals tbody tr")
    assert any(r.text.startswith("repeat_view_no_purchase") for r in rows)
    def shown() -> str:
        return str(browser.find_element("id", "timeline").text)

    def note() -> str:
        return str(browser.find_element("id", "decisions-note").text)

    # per-user data: nothing without the admin token, 401 with a wrong one
    _until("decisions withheld", lambda: "admin token" in note(), shown=note)
    assert not browser.find_elements("css selector", "#decisions tbody tr")
    browser.find_element("id", "user-id").send_keys(EARLY_USER)
    browser.find_element("id", "lookup").click()
    _until("the lookup refused", lambda: "enter an admin token" in shown(), shown=shown)
    browser.find_element("id", "token").send_keys("wrong")
    _until("decisions refused", lambda: note().startswith("401"), shown=note)
    browser.find_element("id", "lookup").click()
    _until("the lookup refused", lambda: shown().startswith("error: 401"), shown=shown)
    assert "a valid admin token is required" in shown()
    assert "trigger" not in shown()
    for path in (f"api/users/{EARLY_USER}", "api/decisions"):  # the routes, not only the page
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(console + path, timeout=10)
        refused.value.close()
        assert refused.value.code == 401, path

    browser.find_element("id", "token").clear()
    browser.find_element("id", "token").send_keys(TOKEN)
    _until("recent decisions", lambda: browser.find_elements(
        "css selector", "#decisions tbody tr"), shown=note)
    assert note() == ""
    browser.find_element("id", "lookup").click()
    timeline = _until("the timeline", lambda: "trigger  repeat_view_no_purchase" in (
        text := shown()) and text, shown=shown)
    assert f"user {EARLY_USER}:" in timeline
    assert "decision repeat_view_no_purchase: delivered via inbox" in timeline
    assert "local 08:01 Asia/Shanghai, under cap_day 2 and cap_week 10" in timeline

    text, status = _admin(browser, "validate", BAD, "wrong")
    assert status == "401" and "valid admin token" in text
    text, status = _admin(browser, "validate", BAD, TOKEN)
    assert status == "200" and text.startswith("invalid:")
    assert "scene 'broken', field 'within'" in text and "5x" in text
    text, status = _admin(browser, "validate", CONFIG, TOKEN)
    assert (status, text) == ("200", "valid")
    text, status = _admin(browser, "whatif", CONFIG.replace("per_day: 2", "per_day: 1"), TOKEN)
    assert status == "200" and "repeat_view_no_purchase" in text

    def current() -> str:
        return str(browser.execute_script(
            "return document.getElementById('config').dataset.current || ''"))

    _until("the config shown", lambda: "current version" in browser.find_element(
        "id", "config").text)
    assert current() == ""  # no version pushed yet
    text, status = _admin(browser, "push", BAD, TOKEN)
    assert status == "422" and "scene 'broken', field 'within'" in text
    browser.find_element("id", "push-message").send_keys("caps from the console")
    text, status = _admin(browser, "push", CONFIG, TOKEN)
    assert status == "200" and text.startswith("pushed version 1")
    _until("version 1 shown", lambda: current() == "1")
    text, status = _admin(browser, "push", CONFIG.replace("per_day: 2", "per_day: 1"), TOKEN)
    assert text.startswith("pushed version 2") and "+  caps: {per_day: 1" in text
    browser.find_element("id", "rollback-version").send_keys("1")
    text, status = _admin(browser, "rollback", None, TOKEN)
    assert status == "200" and text.startswith("pushed version 3")
    _until("version 3 shown", lambda: current() == "3")
    rows = [r.text for r in browser.find_elements("css selector", "#versions tbody tr")]
    assert rows[0].startswith("3 (rollback of 1)") and "admin" in rows[0]
    assert "caps from the console" in rows[-1]

    browser.find_element("id", "erase-user").send_keys(EARLY_USER)
    text, status = _admin(browser, "erase", None, TOKEN)
    assert status == "200" and text.startswith("erased: ") and "console_records" in text
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"
              and "status of 401" not in e.get("message", "")  # the wrong token, above
              and "status of 422" not in e.get("message", "")]  # the bad push, above
    assert errors == [], errors  # no CSP violation, no script error, nothing missing
