"""`scenetrigger serve` against real Redis and Kafka: an open pixel puts a
feedback event with the message's user/channel/scene on the events topic,
the inbox needs a token, tags/score need the admin token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from channels.base import Message
from channels.feedback.decisions import DecisionRecord
from channels.feedback.events import MessageMeta, RedisMessageIndex, open_pixel_path, tracked_link
from channels.feedback.kafka_sink import KafkaFeedbackSink
from channels.transports.inbox import InboxStore
from config.loader import load_config_text
from config.tokens import ADMIN_TOKEN_ENV as TOKEN_ENV
from config.tokens import INBOX_SECRET_ENV
from scenetrigger.cli.run.serve import ServeParts, build_app
from tests.agents.kafka_read import read_topic, unique_topic
from tests.channels.receivers import serve_app

CLI = Path(sys.executable).with_name("scenetrigger")
ADMIN = "admin-token-for-tests"
USER_SECRET = "inbox-secret-for-tests"
TRACKING = "tracking-secret-for-tests"
CALLBACK = "callback-token-for-tests"


def config_text(run: str) -> str:
    return f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery: {{redis_prefix: "sv{run}:", tracking: {{allow_hosts: [shop.example.com]}}}}
channels:
  inbox: {{type: inbox, key_prefix: "sv{run}:inbox"}}
"""


def inbox_token(secret: str, user: str, ttl_s: int = 3600) -> str:
    """docs/security.md: EXP.hex(HMAC-SHA256(secret, "inbox\\n" + user + "\\n" + EXP))."""
    exp = int(time.time()) + ttl_s
    sig = hmac.new(secret.encode(), f"inbox\n{user}\n{exp}".encode(), hashlib.sha256)
    return f"{exp}.{sig.hexdigest()}"


def message(user: str, mid: str) -> Message:
    return Message(mid, f"t-{mid}", user, "promo_arrival", "inbox", "Deals", "On now", None,
                   {}, 1_700_000_000_000)


@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_serve_routes_with_real_redis_and_kafka(redis_url: str,
                                                      kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    config = load_config_text(config_text(run))
    client = Redis.from_url(redis_url)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    events_topic, journeys_topic = unique_topic("serve-events"), unique_topic("serve-fb")
    env = {TOKEN_ENV: ADMIN, INBOX_SECRET_ENV: USER_SECRET,
           config.delivery.tracking.callback_token_env: CALLBACK,
           config.delivery.tracking.secret_env: TRACKING}
    decisions_topic = unique_topic("serve-decisions")
    parts = ServeParts(config, client, KafkaFeedbackSink(producer, [events_topic, journeys_topic],
                                                         decisions=decisions_topic),
                       env=env, tags_prefix=f"sv{run}:")
    mid = f"m-{run}"
    await RedisMessageIndex(client, f"sv{run}:").remember(
        mid, MessageMeta("u42", "cart_abandonment", "wechat"))
    store = InboxStore(client, f"sv{run}:inbox")
    assert await store.add(message("u42", mid))
    await client.sadd(f"sv{run}:tags:{{u42}}", "prefers_wechat")
    try:
        async with serve_app(build_app(parts)) as base, aiohttp.ClientSession() as http:
            async with http.get(base + open_pixel_path(TRACKING.encode(), mid)) as resp:
                assert resp.status == 200 and resp.content_type == "image/gif"
            async with http.get(f"{base}/t/o/unknown.gif") as resp:
                assert resp.status == 200  # still a pixel, but no event

            # Clicks count once per message and link (issue 19): 50 unsigned GETs
            # to an allow-listed host were 50 clicks; a bad port recorded one, then 500.
            shop = "https://shop.example.com/anything"
            for n in range(50):  # the same link, then others: unsigned, once per message
                target = shop if n < 25 else f"{shop}/{n}"
                async with http.get(f"{base}/t/c/{mid}", params={"u": target},
                                    allow_redirects=False) as resp:
                    assert resp.status == 302 and resp.headers["Location"] == target
            signed = [tracked_link(base, TRACKING.encode(), mid, f"https://elsewhere.example.net/{n}")
                      for n in (1, 2)]
            for link in (*signed, *signed, signed[0]):  # two links, clicked 2 and 3 times
                async with http.get(link, allow_redirects=False) as resp:
                    assert resp.status == 302
            for bad in ("https://shop.example.com:99999/", "https://shop.example.com:-1/",
                        "https://shop.example.com:x/"):
                async with http.get(f"{base}/t/c/{mid}", params={"u": bad},
                                    allow_redirects=False) as resp:
                    assert resp.status == 400 and "Location" not in resp.headers

            # Provider callbacks: the token in a header, never in the URL.
            report = {"message_id": mid, "status": "DELIVRD"}
            async with http.post(f"{base}/callbacks/sms?token={CALLBACK}", json=report) as resp:
                assert resp.status == 401
                assert "Authorization: Bearer" in (await resp.json())["error"]
            async with http.post(f"{base}/callbacks/sms", json=report,
                                 headers={"Authorization": f"Bearer {CALLBACK}"}) as resp:
                assert resp.status == 200 and (await resp.json())["accepted"] == 1

            # Inbox: the user's own token or the admin token; nothing else.
            inbox = f"{base}/inbox/u42"
            async with http.get(inbox) as resp:
                assert resp.status == 401
            for bad, status in (("Bearer nope", 400), (ADMIN, 401),  # not "Bearer ..."
                                (f"Bearer {inbox_token(USER_SECRET, 'u7')}", 403),
                                (f"Bearer {inbox_token('other-secret', 'u42')}", 403)):
                async with http.get(inbox, headers={"Authorization": bad}) as resp:
                    assert resp.status == status, bad
            for raw, status in ((b"\xff", 400), (b"9\xff.1", 400), (b"1.\xff", 403)):
                # a non-UTF-8 token is refused (no EXP, a bad EXP, a bad SIG), never a 500
                assert await _raw_status(base, b"GET /inbox/u42 HTTP/1.1\r\nHost: x\r\n"
                                         b"Authorization: Bearer " + raw + b"\r\n"
                                         b"Connection: close\r\n\r\n") == status, raw
            own = {"Authorization": f"Bearer {inbox_token(USER_SECRET, 'u42')}"}
            async with http.get(inbox, headers=own) as resp:
                assert resp.status == 200
                body = await resp.json()
            assert [m["message_id"] for m in body["messages"]] == [mid]
            async with http.post(inbox + "/ack", headers=own, json={"ids": [mid]}) as resp:
                assert resp.status == 200 and (await resp.json()) == {"acked": 1}
            async with http.post(inbox + "/ack", json={"ids": [mid]}) as resp:
                assert resp.status == 401
            admin = {"Authorization": f"Bearer {ADMIN}"}
            async with http.get(inbox + "?all=1", headers=admin) as resp:
                assert resp.status == 200
                assert [m["read"] for m in (await resp.json())["messages"]] == [True]

            # Tags and score: the admin token only.
            async with http.get(f"{base}/users/u42/tags") as resp:
                assert resp.status == 401
            async with http.get(f"{base}/users/u42/tags", headers=own) as resp:
                assert resp.status == 401
            async with http.get(f"{base}/users/u42/tags", headers=admin) as resp:
                assert resp.status == 200
                assert (await resp.json())["tags"] == ["prefers_wechat"]
            async with http.get(f"{base}/users/u42/score", headers=admin) as resp:
                assert resp.status == 200

            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "ok"
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            assert 'scenetrigger_feedback_events_total{kind="opened"} 1.0' in metrics
            assert 'scenetrigger_feedback_events_total{kind="clicked"} 3.0' in metrics

        events = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, events_topic)]
        assert [(e["type"], e["user_id"], e["channel"], e["scene"], e["message_id"])
                for e in events] == [("opened", "u42", "wechat", "cart_abandonment", mid),
                                     *[("clicked", "u42", "wechat", "cart_abandonment", mid)] * 3,
                                     ("delivered", "u42", "wechat", "cart_abandonment", mid)]
        records = await read_topic(kafka_bootstrap, journeys_topic)
        assert [(r.key, orjson.loads(r.value)["type"]) for r in records] == [
            (b"u42", "opened"), *[(b"u42", "clicked")] * 3, (b"u42", "delivered")]
        decided = [DecisionRecord.decode(r.value)
                   for r in await read_topic(kafka_bootstrap, decisions_topic)]
        assert [(d.outcome, d.user_id, d.scene, d.channel, d.message_id) for d in decided] == [
            ("opened", "u42", "cart_abandonment", "wechat", mid),
            *[("clicked", "u42", "cart_abandonment", "wechat", mid)] * 3,
            ("delivered", "u42", "cart_abandonment", "wechat", mid)]
    finally:
        await producer.stop()
        await client.aclose()


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_serve_command_prints_feedback_as_jsonl(redis_url: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(config_text(run))
    client = Redis.from_url(redis_url)
    mid = f"m-{run}"
    await RedisMessageIndex(client, f"sv{run}:").remember(
        mid, MessageMeta("u9", "promo_arrival", "push"))
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "serve", "--port", "0", "--config", str(cfg), "--redis-url", redis_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, INBOX_SECRET_ENV)},
             "SCENETRIGGER_TRACKING_SECRET": TRACKING,
             "SCENETRIGGER_HASH_KEY": "test-hash-key"})  # as in production: no dev-key warning
    try:
        assert proc.stderr is not None and proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert "scenetrigger serve: http://" in banner, banner
        base = banner.split()[2].rstrip("/")
        async with aiohttp.ClientSession() as http:
            async with http.get(base + open_pixel_path(TRACKING.encode(), mid)) as resp:
                assert resp.status == 200
            async with http.get(f"{base}/inbox/u9") as resp:
                assert resp.status == 401  # no token configured: closed
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        event = orjson.loads(line)
        assert (event["type"], event["user_id"], event["channel"], event["scene"],
                event["message_id"]) == ("opened", "u9", "push", "promo_arrival", mid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await client.aclose()


async def _raw_status(base: str, request: bytes) -> int:
    """The status of a request sent as raw bytes (aiohttp's client would
    refuse a header that is not UTF-8)."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status
