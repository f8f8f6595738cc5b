"""Erasure on real Redis and Kafka: `export-user` lists every key the user
has (directory, consent, inbox, tags, score, journey state, caps, dedupe,
deferred messages, message index, dead letters); `erase` removes them all
(a SCAN finds nothing of the user), leaves a receipt without the data and a
hashed do-not-contact entry, and makes the worker delete the user's table
key: the changelog holds a tombstone and a restarted worker counts the user
from zero while another user's state survives the restart."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from channels.assembly import open_delivery
from channels.audience.consent import ConsentRecord, RedisConsentStore
from channels.audience.directory import RedisDirectory, contact_from
from channels.base import DeliveryResult, Message
from channels.feedback.events import RedisMessageIndex
from channels.transports.deadletter import DeadLetterStore
from config.hash_keys import HASH_KEY_ENV
from config.loader import load_config
from strategies.scoring import LeadScore
from strategies.store import RedisTagStore
from tests.agents.worker_support import (
    all_committed,
    read_topic,
    send_raw,
    start_worker,
    unique,
    wait_for,
)
from tests.redis_keys import pending_key
from triggers.events import Trigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
NOON = 1_780_056_000_000  # 2026-05-29 12:00 UTC
NIGHT = NOON + 11 * 3_600_000  # 23:00 UTC: quiet hours, deferred
SCENES = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 2, within: 1h}
"""


HASH_KEY = "erase-test-hash-key"


def keyed_dnc(email: str) -> str:
    """docs/security.md: HMAC-SHA256(K, "dnc\n" + hex(SHA256("email\n" + address)))."""
    inner = hashlib.sha256(f"email\n{email}".encode()).hexdigest()
    return hmac.new(HASH_KEY.encode(), f"dnc\n{inner}".encode(), hashlib.sha256).hexdigest()


def config_text(run: str) -> str:
    return SCENES + f"""
delivery: {{redis_prefix: "er{run}:"}}
channels:
  inbox: {{type: inbox, key_prefix: "er{run}:inbox"}}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", *args], check=False,
                          capture_output=True, text=True, timeout=120)


async def fill_redis(url: str, cfg_path: Path, run: str, user: str) -> None:
    """The user's data as the product's own parts write it."""
    cfg = load_config(cfg_path)
    client = Redis.from_url(url, decode_responses=True)
    try:
        prefix = f"er{run}:"
        await RedisDirectory(client, prefix).put(contact_from(user, {
            "email": f"{user}@example.com", "phone": "+8613800000009"}))
        await RedisConsentStore(client, prefix).set(user, "sms", "marketing",
                                                    ConsentRecord(True, NOON, "import"))
        live = open_delivery(cfg, "live", metrics=CollectorRegistry(), redis=client,
                             dead_letter_stream=f"er{run}:dl", redis_url=url)
        sent = await live.pipeline.deliver(Trigger("rv", user, "p1", NOON), None, NOON)
        assert sent.status == "delivered", sent
        assert sent.message is not None  # its open, counted once (the feedback marker)
        assert await RedisMessageIndex(client, prefix).first("opened", sent.message.message_id)
        deferred = await live.pipeline.deliver(Trigger("rv", user, "p2", NIGHT), None, NIGHT)
        assert deferred.status == "deferred", deferred
        await live.aclose()
        tags = RedisTagStore(client, f"er{run}t:")
        await tags.add(user, ["vip"])
        await tags.put_score(user, LeadScore(12.0, NOON))
        await client.hset(f"er{run}t:journeys", user, b"\x01state")  # as RedisJourneyMap does
        message = Message("m-dl", "t-dl", user, "rv", "inbox", "s", "t", None, {}, NOON)
        await DeadLetterStore(client, f"er{run}:dl").add(
            message, "inbox", DeliveryResult(False, "inbox", "m-dl", 3, "down", True))
    finally:
        await client.aclose()


async def keys_of(url: str, run: str, user: str) -> set[str]:
    """Every key of the test's prefixes that names the user or holds a value naming them."""
    client = Redis.from_url(url, decode_responses=True)
    try:
        found = set()
        async for key in client.scan_iter(match=f"er{run}*"):
            kind = await client.type(key)
            if user in key or (kind == "string" and user in (await client.get(key) or "")):
                found.add(key)
        return found
    finally:
        await client.aclose()


async def exists(url: str, keys: list[str]) -> int:
    client = Redis.from_url(url)
    try:
        return int(await client.exists(*keys))
    finally:
        await client.aclose()


async def leftovers(url: str, run: str, user: str) -> dict[str, Any]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        entries = await client.xrange(f"er{run}:dl") or []
        return {
            "journey": await client.hexists(f"er{run}t:journeys", user),
            "deferred": [p for p in (await client.hvals(f"{pending_key(f'er{run}:', user)}:payload"))
                         if user in p],
            "dead_letters": [e for e in entries if user in str(e)],
            "receipts": [k async for k in client.scan_iter(match=f"er{run}:erasure:*")],
            "dnc": await client.exists(f"er{run}:dnc:{keyed_dnc(f'{user}@example.com')}"),
        }
    finally:
        await client.aclose()


async def changelog(bootstrap: str, topic: str) -> list[tuple[bytes, bytes | None]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5_000)
        return [(r.key, r.value) for records in batches.values() for r in records]
    finally:
        await consumer.stop()


def view(user: str, ts: int, product: str) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "ts": ts, "type": "view",
                                        "product_id": product})


def test_export_then_erase_everywhere(kafka_bootstrap: str, redis_url: str,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HASH_KEY_ENV, HASH_KEY)  # the erase command's (a subprocess) key
    run = uuid.uuid4().hex[:8]
    user, other = f"erase-me-{run}", f"keep-me-{run}"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(run))
    prefix = unique("t-erase")
    events = f"{prefix}.events"
    flags = ["--store", "memory", "--commit-interval", "200ms", "--clock", "event"]
    now = int(time.time() * 1000)
    common = ["--config", str(cfg), "--redis-url", redis_url, "--tags-prefix", f"er{run}t:",
              "--dead-letter-stream", f"er{run}:dl"]

    first = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix, flags, cfg)
    try:
        wait_for("4 partitions", lambda: first.metric("scenetrigger_partitions") == 4, 120,
                 [first])
        send_raw(kafka_bootstrap, events, [view(user, now, "x"), view(other, now, "x")])
        wait_for("the views committed", lambda: all_committed(kafka_bootstrap, prefix, events),
                 60, [first])
        asyncio.run(fill_redis(redis_url, cfg, run, user))
        held = asyncio.run(keys_of(redis_url, run, user))
        kinds = {"directory", "do_not_contact_hits", "address_index", "consent", "engagement",
                 "tags", "score", "caps", "dedupe", "message_index", "feedback_markers",
                 f"inbox er{run}:inbox"}
        exported = cli("export-user", user, *common, "--json", "--broker", kafka_bootstrap,
                       "--app-id", prefix)
        assert exported.returncode == 0, exported.stderr
        data = orjson.loads(exported.stdout)
        assert set(data["keys"]) == kinds
        listed = {k for keys in data["keys"].values() for k in keys}
        # export lists every key of the user a SCAN finds, and the open marker of the
        # user's message (named by a message id only: found through the message index)
        markers = set(data["keys"]["feedback_markers"])
        assert len(markers) == 1 and next(iter(markers)).startswith(f"er{run}:once:opened:")
        assert listed - markers == held and len(held) >= 12, (sorted(listed ^ held),
                                                              sorted(held))
        assert data["journeys"]["field"] == user and len(data["deferred"]) == 1
        assert len(data["dead_letters"]) == 1
        assert data["keys"]["directory"][f"er{run}:user:{{{user}}}"].startswith("{")
        # ... and what the worker holds: the one view before the export
        assert data["engine_state"]["profile"]["views"] == 1
        assert data["engine_state"]["windows"]["rv"]["x"]["when"] == [now]

        erased = cli("erase", user, *common, "--broker", kafka_bootstrap,
                     "--topic-prefix", prefix, "--json")
        assert erased.returncode == 0, erased.stderr
        receipt = orjson.loads(erased.stdout)
        assert user not in erased.stdout and f"{user}@example.com" not in erased.stdout
        assert receipt["removed"]["journey_state"] == 1 and receipt["removed"]["deferred"] == 1
        assert receipt["removed"]["dead_letters"] == 1 and receipt["do_not_contact"] == 2
        assert asyncio.run(keys_of(redis_url, run, user)) == set()
        assert asyncio.run(exists(redis_url, sorted(markers))) == 0
        left = asyncio.run(leftovers(redis_url, run, user))
        assert left["journey"] is False and left["deferred"] == [] and left["dead_letters"] == []
        assert len(left["receipts"]) == 1 and left["dnc"] == 1
        wait_for("the erase event committed",
                 lambda: all_committed(kafka_bootstrap, prefix, events), 60, [first])
    finally:
        first.stop()
    assert first.process.returncode == 0, first.log_tail()
    records = asyncio.run(changelog(kafka_bootstrap, f"{prefix}-user-state-changelog"))
    mine = [value for key, value in records if key == user.encode()]
    assert mine and mine[-1] is None  # the tombstone: the last word on the user's key
    assert any(key == other.encode() and value for key, value in records)
    after = cli("export-user", user, *common, "--json", "--broker", kafka_bootstrap,
                "--app-id", prefix)
    assert after.returncode == 0, after.stderr
    assert orjson.loads(after.stdout) == {"user_id": user, "keys": {}, "engine_state": None}

    second = start_worker(tmp_path, "b", kafka_bootstrap, prefix, prefix, flags, cfg)
    try:
        wait_for("4 partitions", lambda: second.metric("scenetrigger_partitions") == 4, 120,
                 [second])
        send_raw(kafka_bootstrap, events, [view(user, now + 10, "x"),
                                           view(other, now + 10, "x")])
        wait_for("two more views taken", lambda: second.metric(
            "scenetrigger_events_total", result="accepted") == 2, 60, [second])
    finally:
        second.stop()
    fired = [(r["user_id"], r["key"]) for r in read_topic(kafka_bootstrap, f"{prefix}.triggers")]
    # the kept user's first view survived the restart; the erased user starts from zero
    assert fired == [(other, "x")]
