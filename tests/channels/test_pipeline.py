"""DeliveryPipeline end to end: content per persona, policy, channel send
(the channels helper's ChannelSender), feedback and the replay command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from channels.assembly import DryRunSender, build_pipeline
from channels.feedback.events import ListSink, MemoryMessageIndex, open_pixel_path
from channels.pipeline import message_id_for
from channels.policy.store import RedisPolicyStore
from channels.transports.inbox import InboxChannel, InboxStore
from channels.transports.logchannel import LogChannel
from channels.transports.registry import ChannelRegistry, ChannelSender
from config.loader import load_config
from config.models import AppConfig
from tests.channels.content_factories import PHONE, T0, catalog, user_state
from tests.paths import REES46_SAMPLE
from triggers.events import Trigger

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = REES46_SAMPLE


def demo_config() -> AppConfig:
    return load_config(ROOT / "config" / "demo.yaml")


async def test_same_trigger_different_message_per_persona() -> None:
    registry = ChannelRegistry()
    log = LogChannel("log")
    registry.add(log)
    sender = ChannelSender(registry, metrics_registry=CollectorRegistry())
    pipeline = build_pipeline(demo_config(), "dry-run", sender, catalog=catalog())
    personas = [
        ("search_driven", "new_or_lapsed"),
        ("category_browser", "new_or_lapsed"),
        ("promo_driven", "promising"),
        ("undetermined", "champion"),
    ]
    subjects = {}
    for i, (style, segment) in enumerate(personas):
        user = f"p{i}"
        trig = Trigger("repeat_view_no_purchase", user, PHONE, T0)
        outcome = await pipeline.deliver(trig, user_state(user, style, segment), T0)
        assert outcome.status == "delivered", outcome
        assert (outcome.style, outcome.segment) == (style, segment)
        assert outcome.message is not None and outcome.channel == outcome.message.channel
        subjects[outcome.variant] = outcome.message.subject
    assert list(subjects) == ["search_exact", "category_new", "promo_hot", "vip_exact"]
    assert len(set(subjects.values())) == 4
    assert [m.user_id for m in log.records] == ["p0", "p1", "p2", "p3"]


async def test_quiet_hours_defer_and_the_sweep_releases() -> None:
    sender = DryRunSender()
    pipeline = build_pipeline(demo_config(), "dry-run", sender, catalog=catalog())
    night = T0 - 4 * 3_600_000  # 06:00 in Shanghai
    state = user_state("u1", "search_driven", now=night)
    trig = Trigger("repeat_view_no_purchase", "u1", PHONE, night)
    outcome = await pipeline.deliver(trig, state, night)
    assert outcome.status == "deferred" and outcome.reason == "quiet_hours"
    assert await pipeline.release_due(night + 3_600_000, lambda _u: state) == []
    released = await pipeline.release_due(T0, lambda _u: state)
    assert [o.status for o in released] == ["delivered"]
    assert [m.trigger_id for m in sender.messages] == [trig.trigger_id]


async def test_feedback_and_tracking_links() -> None:
    config = demo_config()
    sink, index, sender = ListSink(), MemoryMessageIndex(), DryRunSender()
    pipeline = build_pipeline(
        config,
        "live",
        sender,
        channels=["email", "inbox"],
        catalog=catalog(),
        index=index,
        feedback=sink,
        env={"SCENETRIGGER_TRACKING_SECRET": "k"},
    )
    trig = Trigger("repeat_view_no_purchase", "u1", PHONE, T0)
    outcome = await pipeline.deliver(trig, user_state("u1", "search_driven"), T0)
    message = outcome.message
    assert message is not None and message.html is not None
    assert message.message_id == message_id_for(trig.trigger_id, message.channel)
    assert "http://127.0.0.1:8080/t/c/" in message.html and "/t/o/" in message.html
    assert [(e.kind, e.user_id, e.channel) for e in sink.events] == [
        ("delivered", "u1", message.channel)
    ]
    meta = await index.lookup(message.message_id)
    assert meta is not None and meta.scene == "repeat_view_no_purchase"
    # an open through the feedback routes resets the user's back-off count
    key = f"{config.delivery.redis_prefix}eng:{{u1}}"  # the {user} hash tag
    assert (await pipeline.policy.store.engagement(key))[0] == 1
    app = pipeline.feedback_app(sink, "tok")
    async with TestClient(TestServer(app.application(), host="127.0.0.1")) as client:
        resp = await client.get(open_pixel_path(pipeline.tracking_secret, message.message_id))
        assert resp.status == 200
    assert [e.kind for e in sink.events] == ["delivered", "opened"]
    assert (await pipeline.policy.store.engagement(key))[0] == 0


@pytest.mark.integration
async def test_duplicate_trigger_is_delivered_once_through_redis_and_the_inbox(
    redis_url: str,
) -> None:
    raw = Redis.from_url(redis_url)
    text = Redis.from_url(redis_url, decode_responses=True)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    config = demo_config()
    config = config.model_copy(
        update={"delivery": config.delivery.model_copy(update={"redis_prefix": prefix})}
    )
    store = InboxStore(raw, f"{prefix}inbox")
    metrics = CollectorRegistry()
    try:
        trig = Trigger("cart_abandonment", "u1", None, T0)
        statuses = []
        for _restart in range(2):  # a replay or a worker restart builds a new pipeline
            registry = ChannelRegistry()
            registry.add(InboxChannel("inbox", store))
            pipeline = build_pipeline(
                config,
                "live",
                ChannelSender(registry, metrics_registry=metrics),
                channels=["inbox"],
                catalog=catalog(),
                store=RedisPolicyStore(text),
            )
            for _retry in range(2):
                outcome = await pipeline.deliver(trig, user_state("u1", "search_driven"), T0)
                statuses.append((outcome.status, outcome.reason))
        assert statuses == [("delivered", None)] + [("suppressed", "duplicate")] * 3
        items = await store.list("u1")
        assert len(items) == 1 and items[0].message["trigger_id"] == trig.trigger_id
        sent = metrics.get_sample_value(
            "scenetrigger_deliveries_total", {"channel": "inbox", "result": "ok"}
        )
        assert sent == 1
    finally:
        await raw.aclose()
        await text.aclose()


def _replay(*extra: str) -> tuple[list[dict[str, object]], str]:
    done = subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "replay", str(SAMPLE), "--no-progress", *extra],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr.decode()


def test_replay_with_deliver_keeps_the_triggers_and_reports_delivery(tmp_path: Path) -> None:
    plain, _ = _replay()
    summary_file = tmp_path / "summary.json"
    delivered, stderr = _replay(
        "--config",
        "config/demo.yaml",
        "--deliver",
        "dry-run",
        "--catalog",
        str(SAMPLE),
        "--summary-json",
        str(summary_file),
    )
    assert len(plain) == 425 and len(delivered) == 425
    contract = ["scene", "user_id", "key", "ts"]
    assert [{k: d[k] for k in contract} for d in delivered] == plain
    assert all(list(d)[:4] == contract for d in delivered)
    assert sum(d["scene"] == "repeat_view_no_purchase" for d in delivered) == 424
    assert all({"delivery", "channel", "variant", "segment", "style"} <= set(d) for d in delivered)
    summary = json.loads(summary_file.read_text())["delivery"]
    statuses = [d["delivery"] for d in delivered]
    assert summary["delivered"] == statuses.count("delivered") > 0
    assert sum(summary["suppressed"].values()) == statuses.count("suppressed") > 0
    assert "delivered" in stderr and "suppressed" in stderr and "cap_day" in stderr
    # with the default config (UTC quiet hours 22-08) the 00:00-02:35 triggers wait
    night, _ = _replay("--deliver", "dry-run")
    assert [{k: d[k] for k in contract} for d in night] == plain
    assert {d["delivery"] for d in night} == {"deferred"}


@pytest.mark.integration
def test_replay_deliver_live_twice_delivers_once(redis_url: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = tmp_path / "live.yaml"
    scenes = (ROOT / "config" / "scenes.yaml").read_text(encoding="utf-8")
    config.write_text(
        scenes
        + f"""
channels:
  inbox: {{type: inbox, key_prefix: "{prefix}:inbox"}}
delivery: {{default_timezone: Asia/Shanghai, redis_prefix: "{prefix}:"}}
""",
        encoding="utf-8",
    )
    env = {**os.environ, "SCENETRIGGER_REDIS_URL": redis_url}
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "scenetrigger.cli.main",
                "replay",
                str(SAMPLE),
                "--no-progress",
                "--config",
                str(config),
                "--deliver",
                "live",
                "--catalog",
                str(SAMPLE),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=240,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        runs.append([json.loads(line) for line in done.stdout.splitlines()])
    first, second = runs
    assert len(first) == len(second) == 425
    assert sum(d["delivery"] == "delivered" for d in first) == 422
    assert {(d["delivery"], d.get("reason")) for d in second} == {("suppressed", "duplicate")}

    async def inbox_size(user: str) -> int:
        client = Redis.from_url(redis_url)
        try:
            return len(await InboxStore(client, f"{prefix}:inbox").list(user))
        finally:
            await client.aclose()

    user = next(d["user_id"] for d in first if d["delivery"] == "delivered")
    delivered_to_user = sum(d["user_id"] == user and d["delivery"] == "delivered" for d in first)
    assert asyncio.run(inbox_size(user)) == delivered_to_user
