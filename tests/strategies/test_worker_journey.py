"""The reactivation strategy on the Faust scene worker with real Kafka and
Redis, through a restart of the journey host in the middle of a wait.

``scenetrigger worker`` (a subprocess, wall clock) turns views into triggers
on its triggers topic; :class:`strategies.bridge.JourneyBridge` consumes them
and publishes the messages to an actions topic. The shipped strategy is used
with its day-long waits scaled to seconds (the steps are unchanged).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config.loader import load_config
from config.strategy_models import resolve_include
from strategies.bridge import BridgeTopics, JourneyBridge, KafkaSender
from strategies.service import JourneyService
from strategies.store import RedisTagStore
from tests.agents.kafka_read import read_topic
from tests.agents.worker_support import start_worker, unique, wait_for

WAIT_S = 10
LATER_WAIT_S = 20
SCENES = {
    "repeat_view_no_purchase": {"kind": "repeat", "when": {"type": "view"},
                                "per": "product_id", "count": 3, "within": "30m"},
    "cart_abandonment": {"kind": "absence", "start": {"type": "cart"}, "after": "30m"},
}


def scaled_reactivation() -> dict[str, Any]:
    text = resolve_include("reactivation").read_text()
    # the first wait (where the host restarts) is short; the later ones leave
    # time for a restarted host to catch up before the open arrives
    text = text.replace("within: 2d", f"within: {WAIT_S}s", 1).replace(
        "within: 2d", f"within: {LATER_WAIT_S}s").replace("7d", "1h").replace("14d", "1h")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


async def _bridge_until(bootstrap: str, redis_url: str, config_path: Path, prefix: str,
                        done: Callable[[list[dict[str, Any]], JourneyService], bool],
                        timeout_s: float,
                        feedback: Callable[[list[dict[str, Any]]], list[bytes]] | None = None,
                        ) -> None:
    """One life of the journey host: run the bridge until ``done(actions)``."""
    config = load_config(config_path)
    topics = BridgeTopics(f"{prefix}.triggers", f"{prefix}.journey-actions",
                          f"{prefix}.feedback")
    client = aioredis.Redis.from_url(redis_url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(*[t for t in (topics.triggers, topics.feedback) if t],
                                bootstrap_servers=bootstrap, group_id=f"{prefix}-journeys",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    sent: list[dict[str, Any]] = []
    sender = KafkaSender(producer, topics.actions)

    async def send(action: Any) -> None:
        await sender(action)
        sent.append({"channel": action.channel, "user_id": action.user_id,
                     "message_id": action.message_id, "ts": action.ts,
                     "content": action.content_ref})

    service = JourneyService(config, client, RedisTagStore(client, f"{prefix}:"), send,
                             prefix=f"{prefix}:")
    await service.start()
    bridge = JourneyBridge(service, consumer, topics, tick_interval_s=0.2)
    task = asyncio.create_task(bridge.run())
    fed = False
    try:
        deadline = time.monotonic() + timeout_s
        while not done(sent, service):
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"journey host timed out; taken {bridge.taken}, fed {fed}, "
                    f"assignment {consumer.assignment()}, tags wx "
                    f"{service.engine.tags_of('wx')} quiet {service.engine.tags_of('quiet')}, "
                    f"positions {service.engine.position('wx', 'reactivation')} "
                    f"{service.engine.position('quiet', 'reactivation')}; sent so far: {sent}")
            if feedback is not None and not fed:
                lines = feedback(sent)
                if lines:
                    for line in lines:
                        await producer.send_and_wait(f"{prefix}.feedback", line, key=b"fb")
                    fed = True
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
        await client.aclose()


async def _produce(bootstrap: str, topic: str, lines: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in lines:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _channels(sent: list[dict[str, Any]], user: str) -> list[str]:
    return [s["channel"] for s in sent if s["user_id"] == user]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_reactivation_on_the_worker_survives_a_restart_mid_wait(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    config_path = tmp_path / "journeys.yaml"
    config_path.write_text(yaml.safe_dump(
        {"scenes": SCENES, "strategies": {"journeys": scaled_reactivation()}}))
    prefix = unique("t-journey")
    asyncio.run(_produce(kafka_bootstrap, f"{prefix}.feedback", [
        (b"nobody", orjson.dumps({"user_id": "nobody", "ts": 0, "type": "page"}))]))
    asyncio.run(_produce(kafka_bootstrap, f"{prefix}.events", [
        (b"warm", orjson.dumps({"user_id": "warm", "ts": 0, "type": "page"}))]))
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix, [], config_path)
    try:
        wait_for("the worker taking events",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted") >= 1,
                 150, [worker])
        # journey waits count from the trigger's event time (the scene clock
        # rule), so the views are stamped when the worker is up
        now = time.time_ns() // 1_000_000
        asyncio.run(_produce(kafka_bootstrap, f"{prefix}.events", [
            (user.encode(), orjson.dumps({"user_id": user, "ts": now + i, "type": "view",
                                          "product_id": "p1"}))
            for user in ("wx", "quiet") for i in range(3)]))
        # life 1: both users get the first push; the host stops inside the 2-"day" wait
        asyncio.run(_bridge_until(
            kafka_bootstrap, redis_url, config_path, prefix,
            lambda s, _svc: _channels(s, "wx") == ["push"] and _channels(s, "quiet") == ["push"],
            90))
        time.sleep(WAIT_S + 1)  # the deadline passes while no host runs

        # life 2: positions come back from Redis and the due wait fires at once;
        # "wx" opens the WeChat message, "quiet" opens nothing
        def wechat_open(sent: list[dict[str, Any]]) -> list[bytes]:
            wx = [s for s in sent if s["user_id"] == "wx" and s["channel"] == "wechat"]
            return [orjson.dumps({"user_id": "wx", "ts": time.time_ns() // 1_000_000,
                                  "type": "opened", "channel": "wechat",
                                  "message_id": wx[0]["message_id"]})] if wx else []

        def finished(_sent: list[dict[str, Any]], svc: JourneyService) -> bool:
            return "prefers_wechat" in svc.engine.tags_of("wx") and \
                "churned" in svc.engine.tags_of("quiet")

        asyncio.run(_bridge_until(kafka_bootstrap, redis_url, config_path, prefix, finished,
                                  90, feedback=wechat_open))
    finally:
        worker.stop()
    actions = [orjson.loads(r.value) for r in
               asyncio.run(read_topic(kafka_bootstrap, f"{prefix}.journey-actions"))]
    by_user: dict[str, list[dict[str, Any]]] = {}
    for a in actions:
        by_user.setdefault(a["user_id"], []).append(a)
    for user in ("wx", "quiet"):
        got = by_user[user]
        assert [(a["channel"], a["content_ref"]) for a in got] == [
            ("push", "reactivation_push_1"), ("push", "reactivation_push_2"),
            ("sms", "reactivation_last_call"), ("wechat", "reactivation_last_call")]
        assert len({a["message_id"] for a in got}) == 4  # each sent once across the restart
        assert got[1]["ts"] - got[0]["ts"] == WAIT_S * 1000  # the deadline, not the restart
    tags = asyncio.run(_tags(redis_url, prefix))
    assert "prefers_wechat" in tags["wx"] and "churned" not in tags["wx"]
    assert "churned" in tags["quiet"] and "prefers_wechat" not in tags["quiet"]


async def _tags(redis_url: str, prefix: str) -> dict[str, frozenset[str]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = RedisTagStore(client, f"{prefix}:")
        return {u: await store.tags(u) for u in ("wx", "quiet")}
    finally:
        await client.aclose()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_journeys_command_serves_tags_and_score(kafka_bootstrap: str, redis_url: str,
                                                tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.services import REPO, free_port

    asyncio.run(_seed_tags(redis_url))
    port = free_port()
    log_path = tmp_path / "journeys.log"
    prefix = unique("t-jcmd")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "journeys", "--broker", kafka_bootstrap,
             "--topic-prefix", prefix, "--redis-url", redis_url, "--redis-prefix", "t6cmd:",
             "--admin-port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "SCENETRIGGER_ADMIN_TOKEN": "tok-123"})

    def get(path: str, token: str | None) -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, body = get("/users/42/tags", "tok-123")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log_path.read_text(errors="replace")) from None
                time.sleep(0.3)
        assert (status, body) == (200, {"user_id": "42", "tags": ["churned"]})
        assert get("/users/42/tags", None)[0] == 401
        assert get("/users/42/score", "wrong")[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _seed_tags(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await RedisTagStore(client, "t6cmd:").add("42", ["churned"])
    finally:
        await client.aclose()
