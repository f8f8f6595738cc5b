"""The console's KPI panel and journey table in a real headless Chromium,
served by a running ``scenetrigger console`` that replays the rees46 sample:
the panel shows ``report --kpis``' numbers (computed here by the report
command on the same sample) and the journey table ``report --journey``'s
steps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from scenetrigger.cli.main import main
from tests.browser import browser
from tests.paths import REES46_SAMPLE
from tests.scenetrigger.test_explain import CONFIG
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
__all__ = ["browser"]
JOURNEYS = CONFIG.replace("strategies: {control:", "strategies: {include: [reactivation], control:")


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    config = tmp_path / "console.yaml"
    config.write_text(JOURNEYS)
    port = free_port()
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "console", "--events",
             str(REES46_SAMPLE), "--rate", "1000000", "--config", str(config),
             "--port", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SCENETRIGGER_ADMIN_TOKEN": "kpi-test-token"})
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
        yield url, config
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()


def _until(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _cells(browser: Any, table: str) -> list[list[str]]:
    rows: list[list[str]] = browser.execute_script(
        "return Array.from(document.querySelectorAll(`#${arguments[0]} tbody tr`))"
        ".map((tr) => Array.from(tr.cells).map((td) => td.textContent));", table)
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def test_the_kpi_panel_shows_the_reports_numbers(console: tuple[str, Path], browser: Any,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url, config = console
    triggers = tmp_path / "triggers.jsonl"
    assert main(["replay", str(REES46_SAMPLE), "--config", str(config), "--out", str(triggers),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(triggers), str(REES46_SAMPLE), "--config", str(config),
                 "--kpis", "--json", "-"]) == 0
    figures = orjson.loads(capsys.readouterr().out)["kpis"]["all"]
    assert main(["report", str(triggers), str(REES46_SAMPLE), "--config", str(config),
                 "--journey", "reactivation", "--json", "-"]) == 0
    journey = orjson.loads(capsys.readouterr().out)["journey"]

    browser.get(url)
    _until("the input finished", lambda: "(input finished)" in browser.find_element(
        "id", "status").text)
    want = ["all", "–", str(figures["visitors"]), _pct(figures["registration_rate"]),
            str(figures["people"]), _pct(figures["add_to_cart_rate"]),
            _pct(figures["first_purchase_rate"]), str(figures["buyers"]),
            _pct(figures["repurchase_rate"])]
    # the panel refreshes every 4 s: wait for the one after the input finished
    rows = _until("the KPI panel with every event", lambda: (
        got := _cells(browser, "kpis")) and got[0] == want and got)
    assert figures["people"] > 1000 and figures["buyers"] > 0
    splits = {(r[0], r[1]): r for r in rows[1:]}
    assert splits[("global", "marketed")][4] == want[4]  # no global group: everyone marketed
    assert {name for name, _ in splits} == {"segment", "style", "global"}
    cohorts = _cells(browser, "cohorts")
    assert [[c[1], c[2]] for c in cohorts] == [
        [str(row["size"]), " ".join(_pct(r) for r in row["retained"])]
        for row in figures["cohorts"]]
    # the journey table: the report's entered and sent per step
    steps = _until("the journey table", lambda: [
        r for r in _cells(browser, "journeys") if r[0] == "reactivation"])
    assert [(r[2], r[4], r[5]) for r in steps] == [
        (s["step"], str(s["entered"]), str(s["sent"])) for s in journey["steps"]]
    assert int(steps[0][4]) > 0
