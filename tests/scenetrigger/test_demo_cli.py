"""``scenetrigger demo`` as a user runs it: a subprocess with a real aiohttp server."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from scenetrigger.demo.personas import PERSONA_LABELS
from tests.scenetrigger.demo_process import REPO, http_get, start_demo

SCENES = {"repeat_view_no_purchase", "cart_abandonment", "promo_arrival"}
PERSONAS = "|".join(re.escape(label) for label in PERSONA_LABELS.values())
TRIGGER_LINE = re.compile(
    rf"^\d\d:\d\d:\d\d  (\w+)(\*?) +(u\d+) +({PERSONAS}) +(\S+) +→ \[([\w-]+)\] (.+)$"
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _accepted(metrics: str) -> float:
    match = re.search(r'^scenetrigger_events_total\{reason="",result="accepted"\} (\S+)$', metrics, re.M)
    assert match, metrics
    return float(match.group(1))


def test_demo_prints_all_three_scenes_and_serves_metrics_and_state() -> None:
    demo = start_demo("--duration", "5", "--speed", "600")
    try:
        url = demo.wait_ready()
        assert re.fullmatch(r"http://127\.0\.0\.1:(\d+)/", url) and not url.endswith(":0/")
        status, ctype, body = http_get(url + "healthz")
        assert status == 200 and orjson.loads(body) == {"status": "ok"}
        # While it runs: the state and the metrics move.
        state: dict[str, Any] = {}
        metrics = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, ctype, body = http_get(url + "api/state")
            assert ctype.startswith("application/json")
            state = orjson.loads(body)
            status, mtype, raw = http_get(url + "metrics")
            assert status == 200 and mtype.startswith("text/plain")
            metrics = raw.decode()
            if state["events"] and _accepted(metrics) > 0 and state["recent"]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"state never moved: {state}\n{demo.output()}")
        status, ctype, page = http_get(url)
        assert status == 200 and ctype.startswith("text/html") and b'id="triggers"' in page
    finally:
        code = demo.wait(60)
    out = demo.output()
    assert code == 0, out
    assert set(state["triggers"]) == SCENES
    assert "scenetrigger_demo_users" in metrics
    for scene in SCENES:
        assert f'scenetrigger_triggers_total{{scene="{scene}"}}' in metrics
    fired = [m for m in map(TRIGGER_LINE.match, demo.lines) if m and not m.group(2)]
    assert {m.group(1) for m in fired} == SCENES, out
    personas = {m.group(4) for m in fired}
    assert {"cart abandoner", "promo hunter", "search-driven shopper"} <= personas, out
    # The content pipeline in dry run: channels marked as such, variants per style.
    assert all(m.group(6).endswith("-dry-run") for m in fired), out
    searcher = [m.group(7) for m in fired if m.group(4) == "search-driven shopper"
                and m.group(1) == "repeat_view_no_purchase"]
    assert any("search_exact; search_driven/" in t for t in searcher), out
    variants = {v.group(1) for m in fired if (v := re.search(r"\((?:[^;()]*; )?(\w+); \w+/\w+\)$",
                                                           m.group(7)))}
    assert len(variants) >= 3, out  # different content for different shoppers
    assert "demo summary:" in out and "cart_abandonment" in out.split("demo summary:")[1]


def test_ctrl_c_stops_with_a_summary() -> None:
    demo = start_demo("--speed", "600")
    try:
        demo.wait_ready()
        demo.wait_line("promo_arrival", timeout=60)
        demo.proc.send_signal(signal.SIGINT)
    finally:
        code = demo.wait(60)
    assert code == 0, demo.output()
    assert any(line.startswith("demo summary:") for line in demo.lines), demo.output()


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "scenetrigger.cli.main", "demo", "--port", str(port),
             "--duration", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port 0" in result.stderr


def test_a_reader_that_goes_away_stops_the_demo_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "scenetrigger.cli.main", "demo", "--no-web", "--speed", "600"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        head = [proc.stdout.readline() for _ in range(12)]  # like `| head -12`
        assert all("→" in line.decode() for line in head[-2:]), head
        proc.stdout.close()
        code = proc.wait(60)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0 and "Traceback" not in err, err


def test_demo_writes_its_decision_log(tmp_path: Any) -> None:
    from channels.feedback.decisions import read_decision_file

    path = tmp_path / "decisions.jsonl"
    demo = start_demo("--no-web", "--duration", "6", "--speed", "1200", "--decisions", str(path))
    assert demo.wait(90) == 0, demo.output()
    records = read_decision_file(path)
    assert records, demo.output()
    outcomes = {r.outcome for r in records}
    assert "delivered" in outcomes
    for record in records:
        assert record.figures, record  # every outcome says the numbers behind it
        if record.outcome in ("suppressed", "deferred"):
            assert record.rule is not None, record
    # The summary's counts are the log's: scene messages, and journey sends.
    scene = [r for r in records if not r.scene.startswith("journey:")]
    journey = [r for r in records if r.scene.startswith("journey:")]
    out = demo.output()
    sent = sum(1 for r in scene if r.outcome == "delivered")
    assert re.search(rf"^  messages +{sent} +would be sent now", out, re.M), out
    journey_sent = sum(1 for r in journey if r.outcome == "delivered")
    assert re.search(rf"^    sent +{journey_sent}$", out, re.M), out
