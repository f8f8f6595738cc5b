"""What a first-time operator sees of the console: it logs when it serves and,
in Kafka mode, when it has read the topics' backlog; the per-minute chart of a
single minute spans that minute, not years (it spanned June 2027 to June 2029);
an erase says what it does to the counts."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.producer import ensure_topics
from tests.agents.worker_support import start_cli, wait_for
from tests.browser import browser
from tests.scenetrigger.test_console_browser import _until
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
__all__ = ["browser"]
TOKEN = "first-run-token"
MINUTE_MS = 60_000


def one_minute_of_views(path: Path) -> int:
    """Three views of one product in one minute: one repeat trigger; returns
    that minute's start (seconds)."""
    start = 1_780_000_000_000 - 1_780_000_000_000 % MINUTE_MS + 5_000
    path.write_bytes(b"".join(orjson.dumps({"user_id": "u1", "ts": start + i * 1000,
                                            "type": "view", "product_id": "p1"}) + b"\n"
                              for i in range(3)))
    return (start - start % MINUTE_MS) // 1000


def test_a_single_minute_chart_spans_that_minute(tmp_path: Path, browser: Any) -> None:
    events = tmp_path / "one-minute.jsonl"
    minute = one_minute_of_views(events)
    port = free_port()
    console = start_cli(tmp_path / "console.log", "console", [
        "console", "--events", str(events), "--port", str(port)], port,
        env={"SCENETRIGGER_ADMIN_TOKENS": f"ops={TOKEN}"})
    try:
        wait_for("the console ready", lambda: "scenetrigger console ready on http://"
                 in console.log_tail(), 60, [console])
        browser.get(f"http://127.0.0.1:{port}/")

        def span() -> tuple[float, float, int] | None:
            got = browser.execute_script(
                "const d = document.getElementById('trigger-chart').dataset;"
                "return d.points > 0 && d.xmin !== 'null' ? [d.xmin, d.xmax, d.points] : null;")
            return None if got is None else (float(got[0]), float(got[1]), int(got[2]))

        xmin, xmax, points = _until("the chart drawn", span)
        assert points == 1  # one minute of data
        assert xmin <= minute <= xmax
        assert xmax - xmin <= 2 * 60  # the minute's neighbours, not two years

        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/admin/erase/u1",
                                         method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            receipt = json.loads(resp.read())
        assert receipt["removed"]["console_records"] > 0
        assert "per-minute charts and totals" in receipt["console_counts"]
    finally:
        console.process.terminate()
        console.process.wait(timeout=30)


def test_kafka_mode_logs_ready_then_caught_up(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"first{uuid.uuid4().hex[:8]}"
    topics = [f"{prefix}.{n}" for n in ("events", "triggers", "decisions")]
    asyncio.run(ensure_topics(kafka_bootstrap, topics, 1))
    port = free_port()
    console = start_cli(tmp_path / "console.log", "console", [
        "console", "--broker", kafka_bootstrap, "--topic-prefix", prefix, "--port", str(port)],
        port, env={k: v for k, v in os.environ.items() if "TOKEN" not in k})
    try:
        wait_for("ready, then caught up", lambda: "console: caught up with the topics (0 events"
                 in console.log_tail(), 90, [console])
        log = console.log_tail()
        assert log.index("scenetrigger console ready on http://") < log.index("caught up")
    finally:
        console.process.terminate()
        console.process.wait(timeout=30)
