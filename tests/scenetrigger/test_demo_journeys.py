"""The reactivation strategy in the demo: journey actions on the accelerated
clock, with simulated opens, so both branches (prefers_wechat and churned)
show within a bounded simulated time for a fixed seed."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from channels.pipeline import Outcome
from config.loader import load_config
from config.strategy_models import load_strategy_file, resolve_include
from scenetrigger.cli.run.demo import DEFAULT_JOURNEY_SCALE, ConsolePrinter, _wire_journeys
from scenetrigger.demo.content import BuiltinContent, PipelineContent, demo_journeys, pick_content
from scenetrigger.demo.personas import Clickstream
from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.runtime.replay import new_engine
from strategies.actions import SendAction
from strategies.embedded import JourneySubscriber, SimulatedOpens, scaled
from tests.scenetrigger.demo_process import REPO, http_get, start_demo
from tests.scenetrigger.test_web_browser import browser  # noqa: F401 - the Chromium fixture
from triggers.errors import ConfigError

START = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 3_600_000  # 01:00 UTC
SPEED = 600.0
REAL_SECONDS = 30.0
DAY = 86_400_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def run_demo(seed: int) -> tuple[list[str], EmbeddedRuntime]:
    config = load_config()
    stream = Clickstream(200, seed, START, rate=15 / SPEED)
    runtime = EmbeddedRuntime(new_engine(config), stream, start_ms=START, speed=SPEED,
                              persona_of=stream.persona_of, content=BuiltinContent(),
                              clock=FakeClock())
    out = io.StringIO()
    printer = ConsolePrinter(out, runtime.stop, runtime.persona)
    runtime.subscribe(printer)
    args = argparse.Namespace(strategies="auto", journey_scale=DEFAULT_JOURNEY_SCALE, seed=seed)
    journeys = _wire_journeys(runtime, config, args, printer, runtime.metrics.registry)
    assert journeys is not None
    await runtime.run(REAL_SECONDS)
    await runtime.close()
    return out.getvalue().splitlines(), runtime


def roomy_caps_config(tmp_path: Path) -> Path:
    """The shipped scenes with caps that fit the demo's compressed journeys.

    Journey sends obey the delivery policy like scene messages; the shipped
    caps are 3 messages a day, and at the demo's journey scale a whole
    reactivation run (2 pushes, then SMS and WeChat) takes one simulated hour,
    so with them the last call is capped and ``prefers_wechat`` never shows."""
    scenes = (REPO / "config" / "scenes.yaml").read_text(encoding="utf-8")
    path = tmp_path / "roomy-caps.yaml"
    path.write_text(scenes + "\ndelivery:\n  caps: {per_day: 20, per_week: 100}\n",
                    encoding="utf-8")
    return path


async def run_pipeline_demo(config_path: Path | None, seconds: float) -> dict[str, int]:
    """The demo with the pipeline content on a fake clock: the journey counts."""
    config = load_config(config_path)
    stream = Clickstream(200, 7, START, rate=15 / SPEED)
    models = demo_journeys(config, "auto", DEFAULT_JOURNEY_SCALE)
    runtime = EmbeddedRuntime(new_engine(config, profiles=True), stream, start_ms=START,
                              speed=SPEED, persona_of=stream.persona_of, clock=FakeClock(),
                              content=pick_content(config, "pipeline", None, models.values()))
    printer = ConsolePrinter(io.StringIO(), runtime.stop, runtime.persona)
    runtime.subscribe(printer)
    args = argparse.Namespace(strategies="auto", journey_scale=DEFAULT_JOURNEY_SCALE, seed=7)
    journeys = _wire_journeys(runtime, config, args, printer, runtime.metrics.registry, models)
    assert journeys is not None
    await runtime.run(seconds)
    await runtime.close()
    return dict(journeys.counts)


async def test_journey_sends_obey_the_caps_and_quiet_hours_of_the_pipeline() -> None:
    counts = await run_pipeline_demo(None, 40.0)
    assert counts["sent"] > 0
    assert counts["held: cap_day"] > 0  # 3 a day, scene messages included
    assert counts["held: quiet_hours"] > 0
    assert "tag +prefers_wechat" not in counts  # the capped last call is never opened


async def test_with_room_in_the_caps_both_branches_show_through_the_pipeline(
        tmp_path: Path) -> None:
    counts = await run_pipeline_demo(roomy_caps_config(tmp_path), 40.0)
    assert counts.get("held: cap_day", 0) == 0
    assert counts["tag +prefers_wechat"] > 0 and counts["tag +churned"] > 0


def journey_lines(lines: list[str]) -> dict[str, list[str]]:
    """user -> the journey lines about them (text after the persona/step columns)."""
    per_user: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[1] == "»":
            per_user[parts[3]].append(line)
    return per_user


async def test_both_reactivation_branches_show_within_the_bounded_time() -> None:
    lines, runtime = await run_demo(seed=7)
    per_user = journey_lines(lines)
    wechat = [u for u, ls in per_user.items() if any("tag +prefers_wechat" in x for x in ls)]
    churned = [u for u, ls in per_user.items() if any("tag +churned" in x for x in ls)]
    assert wechat and churned
    assert not set(wechat) & set(churned)
    for user in churned:  # push, push, sms + wechat, none opened, then winback
        ls = per_user[user]
        sends = [" ".join(x.split("→ ")[1].split()[:2]) for x in ls if "→ [" in x]
        # Each send shows its rendered content (config/content.yaml `journeys`).
        assert all(" · " in x and " — " in x for x in ls if "→ [" in x)
        assert sends[:4] == ["[push-dry-run] reactivation_push_1",
                             "[push-dry-run] reactivation_push_2",
                             "[sms-dry-run] reactivation_last_call",
                             "[wechat-dry-run] reactivation_last_call"]
        churn_at = next(i for i, x in enumerate(ls) if "tag +churned" in x)
        assert not any("opened on" in x for x in ls[:churn_at])
        assert any("» winback" in x and "enrolled (via strategy:reactivation)" in x
                   for x in ls[churn_at:])
    for user in wechat:  # the tag follows a WeChat open of the last-call message
        ls = per_user[user]
        tag_at = next(i for i, x in enumerate(ls) if "tag +prefers_wechat" in x)
        assert "opened on wechat (simulated)" in ls[tag_at - 1]
        assert any("[wechat-dry-run] reactivation_last_call" in x for x in ls[:tag_at])
        # From then on WeChat is this user's first channel in every send step.
        later = [x for x in ls[tag_at:] if "→ [" in x and "reactivation_push" in x]
        assert all("[wechat-dry-run]" in x for x in later)
    # All within the simulated time the run covered.
    assert runtime.stats.sim_ms - START == pytest.approx(REAL_SECONDS * SPEED * 1000, rel=0.01)
    state = runtime.snapshot()["journeys"]
    assert state["counts"]["tag +churned"] == len(churned)
    assert state["counts"]["tag +prefers_wechat"] == len(wechat)
    assert state["recent"] and all(item["ts"] <= runtime.stats.sim_ms for item in state["recent"])
    metrics = runtime.metrics.registry.get_sample_value(
        "scenetrigger_strategy_sends_total",
        {"strategy": "reactivation", "step": "push_1", "channel": "push"})
    assert metrics is not None and metrics > 0


async def test_same_seed_same_journeys() -> None:
    first, _ = await run_demo(seed=3)
    again, _ = await run_demo(seed=3)
    assert [x for x in first if "»" in x] == [x for x in again if "»" in x]
    assert any("»" in x for x in first)


def test_scaled_divides_waits_windows_and_reentry() -> None:
    shipped = load_strategy_file(resolve_include("reactivation"))
    short = scaled(shipped, 96)
    react = short["reactivation"]
    windows = [s.branch.within for s in react.steps if s.branch is not None]
    assert windows == [2 * DAY // 96] * 3
    assert react.reenter_after == 7 * DAY // 96
    assert [s.wait for s in short["winback"].steps if s.wait is not None] == [7 * DAY // 96]
    assert scaled(shipped, 1) == shipped
    assert demo_journeys(load_config(), "auto", 96) == short  # shipped config: no strategies
    assert demo_journeys(load_config(), "none", 96) == {}
    with pytest.raises(ValueError):
        scaled(shipped, 0)


def test_bad_strategies_option_names_file_strategy_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n  entry: {scene: cart_abandonment}\n  steps: [{enrol: zz}]\n")
    with pytest.raises(ConfigError, match="strategy 'a', step 1, field 'enrol': no strategy"):
        demo_journeys(load_config(), str(bad))
    with pytest.raises(ConfigError, match="cannot read strategies file"):
        demo_journeys(load_config(), "no_such_strategy")
    both = demo_journeys(load_config(), "reactivation")
    assert set(both) == {"reactivation", "winback"}


def test_simulated_opens_follow_the_share_per_channel() -> None:
    opens = SimulatedOpens(seed=1, share={"wechat": 0.4, "push": 0.1},
                           min_delay_ms=1000, max_delay_ms=5000)
    n = 20_000
    for channel, share in (("wechat", 0.4), ("push", 0.1), ("sms", 0.0)):
        delays = [opens.open_delay(SendAction("u", channel, "c", "s", "st", f"m{i}", 0))
                  for i in range(n)]
        got = [d for d in delays if d is not None]
        assert abs(len(got) / n - share) <= 4 * (share * (1 - share) / n) ** 0.5 + 1e-9
        assert all(1000 <= d <= 5000 for d in got)
    one = SendAction("u", "wechat", "c", "s", "st", "m1", 0)
    assert opens.open_delay(one) == opens.open_delay(one)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_make_demo_shows_journeys_on_console_and_page(tmp_path: Path) -> None:
    demo = start_demo("--duration", "25", "--speed", "600", "--seed", "7",
                      "--config", str(roomy_caps_config(tmp_path)))
    try:
        url = demo.wait_ready()
        demo.wait_line("tag +prefers_wechat", timeout=40)
        demo.wait_line("tag +churned", timeout=40)
        status, _, body = http_get(url + "api/state")
        assert status == 200
        journeys = orjson.loads(body)["journeys"]
        assert journeys["counts"]["tag +churned"] >= 1
        assert journeys["counts"]["tag +prefers_wechat"] >= 1
        _, _, metrics = http_get(url + "metrics")
        assert b'scenetrigger_strategy_enrolments_total{group="treated",strategy="reactivation"' \
            in metrics
        assert demo.wait(60) == 0
        summary = demo.output().split("demo summary:")[1]
        assert "tag +churned" in summary and "journeys" in summary
    finally:
        demo.stop()
    assert json.dumps(journeys)  # JSON-ready


READ_JOURNEYS = """
const box = document.getElementById('journeys');
const cards = [...document.querySelectorAll('#journey-counts .scene-count')];
const rows = [...document.querySelectorAll('#journey-actions tbody tr')];
return {
  hidden: box.hidden,
  counts: Object.fromEntries(cards.map(c => [c.dataset.action,
                                             Number(c.querySelector('.count').textContent)])),
  rows: rows.map(r => [...r.querySelectorAll('td')].map(td => td.innerText)),
};
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_live_page_shows_the_journeys(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    demo = start_demo("--duration", "90", "--speed", "600", "--seed", "7",
                      "--config", str(roomy_caps_config(tmp_path)))
    try:
        url = demo.wait_ready()
        browser.get(url)
        page: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page = browser.execute_script(READ_JOURNEYS)
            counts = page["counts"]
            if counts.get("tag +prefers_wechat", 0) > 0 and counts.get("tag +churned", 0) > 0:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"journeys never showed both branches: {page}\n{demo.output()}")
        assert not page["hidden"] and page["rows"]
        for cells in page["rows"]:
            assert len(cells) == 5
            assert cells[1] in {"reactivation", "winback"}
            assert cells[2].startswith("u")
        texts = [cells[4] for cells in page["rows"]]
        assert any(t.startswith(("→ [", "enrolled", "tag ", "exit", "opened on")) for t in texts)
    finally:
        demo.stop()


async def test_a_journey_send_held_by_quiet_hours_is_sent_when_released() -> None:
    config = load_config()
    printer_lines: list[Any] = []
    sub = JourneySubscriber(config, printer_lines.append,
                            journeys=demo_journeys(config, "auto", 1.0))
    send = SendAction("u1", "push", "reactivation_push_1", "reactivation", "push_1", "m1",
                      START)
    content = pick_content(config)
    assert isinstance(content, PipelineContent)
    released_at = START + 6 * 3_600_000
    message = content.pipeline.render_send(
        send, content.pipeline.selector.choose_ref(send.content_ref, "u1", None, released_at),
        released_at)
    sub.released(Outcome(trigger_id="m1", user_id="u1", scene="", status="delivered",
                         reason=None, channel="push", variant="v", style="s", segment="g",
                         message=message, order=send))
    (shown,) = printer_lines
    assert shown.ts == released_at and shown.subject == message.subject
    assert sub.counts["sent"] == 1
    await content.close()
