"""``scenetrigger explain USER --broker`` on a running worker and deliver
(real Kafka and Redis): the timeline shows the user's events, both triggers,
the cap that suppressed the second one with its figures, the delivered
feedback, and the scene state read from the worker's table changelog. The
console in Kafka mode shows the same counts, decisions and lookup."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.agents.worker_support import (
    RECORD_FORMS,
    send_events,
    start_cli,
    start_worker,
    unique,
    wait_for,
)
from tests.deploy.test_alerts_live import _popen
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _config(run: str) -> str:
    return f"""
scenes:
  arrive: {{kind: arrival, when: {{type: cart}}, per: product_id, cooldown: 1h}}
  picky: {{kind: arrival, when: {{type: cart}}, per: product_id,
          user: {{segment: {{in: [champion]}}}}}}
  other: {{kind: arrival, when: {{type: cart, other: 1}}}}
channels:
  log: {{type: log}}
content:
  scenes:
    arrive: {{fallback: {{channels: [log], subject: "Your cart", text: "Still there."}}}}
delivery:
  default_timezone: UTC
  caps: {{per_day: 1}}
  quiet_hours: {{enabled: false}}
  redis_prefix: "{run}:"
"""


async def _strategy_state(redis_url: str, tags_prefix: str, user: str, now: int) -> None:
    from redis.asyncio import Redis

    from strategies.scoring import LeadScore
    from strategies.store import RedisTagStore

    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        store = RedisTagStore(client, tags_prefix)
        await store.add(user, ["vip"])
        await store.put_score(user, LeadScore(40.0, now, True))
    finally:
        await client.aclose()


CONSOLE_TOKEN = "explain-live-token"


def _get(url: str, token: str | None = None) -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=30) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("form", RECORD_FORMS)
def test_explain_reads_a_live_deployment(kafka_bootstrap: str, redis_url: str,
                                         tmp_path: Path, form: str) -> None:
    prefix = unique("t-explain")
    config = tmp_path / "config.yaml"
    config.write_text(_config(prefix))
    worker = start_worker(tmp_path, "w", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "memory"], config)
    port = free_port()
    deliver = _popen(tmp_path, "deliver", [
        "deliver", "--config", str(config), "--broker", kafka_bootstrap, "--topic-prefix",
        prefix, "--group", f"{prefix}-deliver", "--redis-url", redis_url,
        "--metrics-port", str(port)], port)
    procs = [worker, deliver]
    user = f"{prefix}-shopper"
    now = int(time.time() * 1000)
    carts = [{"user_id": user, "ts": now + i, "type": "cart", "product_id": p}
             for i, p in enumerate(("p1", "p2"))]
    asyncio.run(_strategy_state(redis_url, f"{prefix}:", user, now))
    try:
        wait_for("4 partitions assigned",
                 lambda: worker.metric("scenetrigger_partitions") == 4, 150, procs)
        send_events(kafka_bootstrap, f"{prefix}.events",
                    [(user.encode(), orjson.dumps(c)) for c in carts], form)

        def handled() -> float:
            return sum(deliver.metric("scenetrigger_deliver_records_total", kind="trigger",
                                      result=r) for r in ("delivered", "suppressed"))

        wait_for("both triggers decided", lambda: handled() == 2, 90, procs)

        def explain() -> dict[str, object]:
            done = subprocess.run(
                [sys.executable, "-m", "scenetrigger.cli.main", "explain", user, "--broker",
                 kafka_bootstrap, "--topic-prefix", prefix, "--app-id", prefix, "--config",
                 str(config), "--redis-url", redis_url, "--tags-prefix", f"{prefix}:",
                 "--json"], cwd=REPO, capture_output=True, timeout=120,
                check=False)
            assert done.returncode == 0, done.stderr
            data: dict[str, object] = orjson.loads(done.stdout)
            return data

        got: dict[str, object] = {}

        def complete() -> bool:
            got.update(explain())  # the state and feedback land a moment later
            return bool(got["windows"]) and len(got["events"]) == 3  # type: ignore[arg-type]

        wait_for("state and feedback in the timeline", complete, 60, procs)

        # The console in Kafka mode follows the same topics.
        console_port = free_port()
        console = start_cli(tmp_path / "console.log", "console", [
            "console", "--broker", kafka_bootstrap, "--topic-prefix", prefix, "--app-id",
            prefix, "--config", str(config), "--port", str(console_port)], console_port,
            env={"SCENETRIGGER_ADMIN_TOKENS": f"ops={CONSOLE_TOKEN}"})
        procs.append(console)
        base = f"http://127.0.0.1:{console_port}"
        summary: dict[str, Any] = {}

        def console_caught_up() -> bool:
            try:
                summary.update(_get(f"{base}/api/summary"))
            except OSError:
                return False
            return (bool(summary["scenes"].get("arrive", {}).get("suppressed"))
                    and summary["scenes"].get("picky", {}).get("refused") == 2)

        wait_for("the console to read the topics", console_caught_up, 60, procs)
        decided = _get(f"{base}/api/decisions", CONSOLE_TOKEN)
        looked_up = _get(f"{base}/api/users/{user}", CONSOLE_TOKEN)

        # Erased: the topics keep the user's records until their retention
        # ends; explain and the console (both with Redis) no longer show them.
        erased = subprocess.run(
            [sys.executable, "-m", "scenetrigger.cli.main", "erase", user, "--config", str(config),
             "--redis-url", redis_url, "--tags-prefix", f"{prefix}:", "--json"], cwd=REPO,
            capture_output=True, timeout=60, check=False)
        assert erased.returncode == 0, erased.stderr
        after = explain()
        console_port = free_port()
        console = start_cli(tmp_path / "console2.log", "console", [
            "console", "--broker", kafka_bootstrap, "--topic-prefix", prefix, "--app-id",
            prefix, "--config", str(config), "--port", str(console_port),
            "--redis-url", redis_url], console_port,
            env={"SCENETRIGGER_ADMIN_TOKENS": f"ops={CONSOLE_TOKEN}"})
        procs.append(console)
        base = f"http://127.0.0.1:{console_port}"
        later: dict[str, Any] = {}

        def console_read_all() -> bool:  # the other user's records show it read the topics
            try:
                later.update(_get(f"{base}/api/summary"))
            except OSError:
                return False
            return bool(later["scenes"].get("other", {}).get("trigger") == 1)

        send_events(kafka_bootstrap, f"{prefix}.events", [(b"bystander", orjson.dumps(
            {"user_id": "bystander", "ts": now + 5, "type": "cart", "product_id": "p9",
             "other": 1}))], form)
        wait_for("the second console to read the topics", console_read_all, 60, procs)
        erased_view = _get(f"{base}/api/users/{user}", CONSOLE_TOKEN)
        erased_recent = _get(f"{base}/api/decisions", CONSOLE_TOKEN)
    finally:
        for proc in procs:
            proc.stop()
    triggers = got["triggers"]
    assert isinstance(triggers, list)
    assert [(t["scene"], t["key"]) for t in triggers] == [("arrive", "p1"), ("arrive", "p2")]
    texts = [[d["text"] for d in t["decisions"]] for t in triggers]
    # The worker's record of each fire (its scene rule and figures, as explain
    # prints them), then deliver's decision.
    assert [t["why"] for t in triggers] == [f"cart of product_id {p}, first within cooldown 1h"
                                            for p in ("p1", "p2")]
    assert texts[0][0] == "arrival: cart of product_id p1, first within cooldown 1h"
    assert texts[0][1] == "delivered: local " + texts[0][1].split("local ")[1]
    assert texts[0][1].endswith("UTC, under cap_day 1")
    assert texts[1] == ["arrival: cart of product_id p2, first within cooldown 1h",
                        "cap_day: 1 of 1 sent today (UTC)"]
    # The worker's user-filter refusals: the filter and what the profile had.
    decisions = got["decisions"]
    assert isinstance(decisions, list)
    refused = [(d["scene"], d["outcome"], d["text"]) for d in decisions
               if d["outcome"] == "refused"]
    assert refused == [("picky", "refused", "user_filter: user filter segments {champion}; "
                                            "the profile had segment:new_or_lapsed")] * 2
    scenes = got["scenes"]
    assert isinstance(scenes, list)
    # explain tells the refusals in the worker's words
    assert [r["why"] for s in scenes if s["scene"] == "picky" for r in s["refused"]] == [
        "user filter segments {champion}; the profile had segment:new_or_lapsed"] * 2
    events = got["events"]
    assert isinstance(events, list)
    assert [e["type"] for e in events] == ["cart", "cart", "delivered"]
    assert summary["scenes"]["arrive"] == {"trigger": 2, "delivered": 1, "suppressed": 1}
    assert summary["scenes"]["picky"] == {"refused": 2}
    assert summary["events"] == 3  # two carts and the delivered feedback
    deliveries = [d for d in decided if d["outcome"] not in ("triggered", "refused")]
    assert deliveries[0]["text"] == "cap_day: 1 of 1 sent today (UTC)"  # the newest first
    assert sum(d["outcome"] == "refused" for d in decided) == 2
    assert "cap_day: 1 of 1 sent today (UTC)" in looked_up["text"]
    assert looked_up["timeline"]["windows"] == got["windows"]
    assert got["strategy_tags"] == ["vip"]  # the strategies' view, from Redis
    assert got["score"] == pytest.approx(40.0, abs=0.1)
    windows = got["windows"]
    assert isinstance(windows, list)
    assert [w.split(": ")[0] for w in windows] == ["arrive[p1]", "arrive[p2]"]
    assert all(": last fired 20" in w for w in windows)  # the worker's state, read back
    # after the erasure
    assert after["events"] == [] and after["triggers"] == [] and after["decisions"] == []
    assert isinstance(after["erased_at"], int) and after["erased_at"] >= now
    assert erased_view["timeline"]["events"] == [] and erased_view["timeline"]["decisions"] == []
    assert all(d["user_id"] != user for d in erased_recent) and erased_recent
    # only the bystander's cart is counted: the erased user's two were dropped
    assert later["scenes"]["arrive"]["trigger"] == 1 and later["scenes"]["picky"] == {"refused": 1}
