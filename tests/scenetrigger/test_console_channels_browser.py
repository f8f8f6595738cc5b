"""The console's return-per-channel rows (``/api/channels`` and its panel in
a real headless Chromium) against ``report --by channel --json`` on the
same events: a running ``scenetrigger console`` replays them with an
``audiences:`` and ``ads:`` config, and reads the ad spend ``audiences
import-spend`` stored in a real Redis."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from scenetrigger.cli.main import main
from tests.browser import browser
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
__all__ = ["browser"]
T0 = 1_780_000_000_000
CONFIG = """
scenes:
  cart_abandonment:
    kind: absence
    start: {type: cart}
    cancel: {type: purchase}
    after: 30m
audiences:
  viewed_not_bought:
    fired: {scene: cart_abandonment, within: 2h}
    purchase: {none_within: 2h}
strategies: {attribution: {window: 1d}}
delivery: {redis_prefix: "PREFIX"}
ads:
  holdout: 0.3
  sinks:
    meta: {type: meta, token_env: META_ACCESS_TOKEN, audiences: {viewed_not_bought: "1"}}
    tiktok: {type: tiktok, token_env: TIKTOK_ACCESS_TOKEN, advertiser_id: "7",
             audiences: {viewed_not_bought: "2"}}
"""
SPEND = ("platform,day,audience,amount,currency\n"
         "meta,2026-05-28,viewed_not_bought,120,EUR\n"
         "meta,2026-05-29,viewed_not_bought,80.25,EUR\n"
         "tiktok,2026-05-28,viewed_not_bought,33,EUR\n")


def _events(path: Path) -> None:
    """300 carts; a buyer pays 50 minutes later (after the 30-minute
    abandonment put them in the audience); one late view moves the clock."""
    rng = random.Random(22)
    events: list[dict[str, Any]] = []
    for n in range(300):
        at = T0 + n * 60_000
        events.append({"user_id": f"u{n}", "ts": at, "type": "cart", "product_id": "p1"})
        if rng.random() < 0.4:
            events.append({"user_id": f"u{n}", "ts": at + 50 * 60_000, "type": "purchase"})
    events.append({"user_id": "late", "ts": T0 + 12 * 3_600_000, "type": "view"})
    events.sort(key=lambda e: int(e["ts"]))
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory,
          redis_url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("channels")
    config, events, spend = tmp / "ads.yaml", tmp / "events.jsonl", tmp / "spend.csv"
    config.write_text(CONFIG.replace("PREFIX", f"ch{uuid.uuid4().hex[:6]}:"))
    _events(events)
    spend.write_text(SPEND)
    assert main(["audiences", "import-spend", str(spend), "--config", str(config),
                 "--redis-url", redis_url]) == 0
    replayed = tmp / "replay.jsonl"
    assert main(["replay", str(events), "--config", str(config), "--out", str(replayed),
                 "--no-progress"]) == 0
    report = tmp / "report.json"
    assert main(["report", str(replayed), str(events), "--by", "channel", "--config",
                 str(config), "--redis-url", redis_url, "--json", str(report)]) == 0
    want = json.loads(report.read_text())
    port = free_port()
    log = tmp / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "console", "--events", str(events),
             "--rate", "1000000", "--config", str(config), "--redis-url", redis_url,
             "--port", str(port)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SCENETRIGGER_ADMIN_TOKEN": "roi-test-token"})
    url = f"http://127.0.0.1:{port}/"
    try:
        _until("the console replayed the events", lambda: _get(url, "api/summary", proc, log)
               .get("done"), 90)
        yield url, want
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()


def _get(url: str, path: str, proc: subprocess.Popen[bytes], log: Path) -> Any:
    try:
        with urllib.request.urlopen(url + path, timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        if proc.poll() is not None:
            raise AssertionError(f"console stopped:\n{log.read_text()}") from None
        return {}


def _until(what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_api_gives_the_reports_json(setup: tuple[str, dict[str, Any]]) -> None:
    url, want = setup
    with urllib.request.urlopen(url + "api/channels", timeout=30) as resp:
        got = json.loads(resp.read())
    assert got == want
    meta = next(r for r in want["rows"] if r["channel"] == "meta")
    assert meta["spend"] == pytest.approx(200.25) and meta["reach"] > 100
    assert meta["holdout"] > 30 and meta["members"] == meta["reach"] + meta["holdout"]


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def test_the_panel_shows_the_reports_rows(setup: tuple[str, dict[str, Any]],
                                          browser: Any) -> None:
    url, want = setup
    rows = [[r["channel"], r["audience"], str(r["reach"]), str(r["holdout"]),
             str(r["conversions"]), str(r["holdout_conversions"]),
             f"{_num(r['incremental'], 1)} [{_num(r['incremental_low'], 1)}, "
             f"{_num(r['incremental_high'], 1)}]", f"{r['spend']:.2f}",
             f"{_num(r['cost_per_incremental'], 2)} [{_num(r['cost_low'], 2)}, "
             f"{'inf' if r['cost_high'] is None else _num(r['cost_high'], 2)}]"]
            for r in want["rows"]]
    assert len(rows) == 2
    browser.get(url)

    def cells() -> list[list[str]]:
        got: list[list[str]] = browser.execute_script(
            "return Array.from(document.querySelectorAll('#channels tbody tr'))"
            ".map((tr) => Array.from(tr.cells).map((td) => td.textContent));")
        return got

    assert _until("the channel panel", lambda: (got := cells()) == rows and got) == rows
