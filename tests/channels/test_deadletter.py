"""Dead-letter and ``scenetrigger redrive`` with a real Redis and a real
webhook receiver (integration)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from channels.base import DeliveryResult
from channels.transports.deadletter import DeadLetter, DeadLetterStore
from channels.transports.registry import ChannelRegistry, ChannelSender
from channels.transports.retry import RetryPolicy
from channels.transports.webhook import WebhookChannel
from scenetrigger.cli.main import main
from tests.channels.receivers import HANG, Receiver, message, running_receiver
from tests.services import start_redis

pytestmark = pytest.mark.integration

SECRET_ENV = "TEST_REDRIVE_SECRET"


@pytest.fixture
async def dead_letters(redis_url: str) -> AsyncIterator[DeadLetterStore]:
    client = aioredis.Redis.from_url(redis_url)
    yield DeadLetterStore(client, f"t:{uuid.uuid4().hex[:8]}:deadletter")
    await client.aclose()


async def all_letters(store: DeadLetterStore) -> list[DeadLetter]:
    return [letter async for letter in store.entries()]


async def test_a_timeout_only_endpoint_ends_in_the_dead_letter(
        dead_letters: DeadLetterStore) -> None:
    metrics = CollectorRegistry()
    async with running_receiver(Receiver(default=HANG)) as rx:
        hook = WebhookChannel("crm", rx.url, b"k", timeout_ms=100,
                              policy=RetryPolicy(max_attempts=3, base_backoff_ms=10))
        sender = ChannelSender(ChannelRegistry({"crm": hook}), dead_letters,
                               metrics_registry=metrics)
        msg = message(data={"sku": "p-1"})
        result = await sender.send(msg)
        await hook.close()
    assert (result.ok, result.attempts, result.retryable) == (False, 3, True)
    assert len(rx.requests) == 3
    [letter] = await all_letters(dead_letters)
    assert (letter.channel, letter.attempts, letter.retryable, letter.status) == \
        ("crm", 3, True, None)
    assert letter.error == "timeout after 100 ms" and letter.message == msg
    assert letter.failed_ms > 1_600_000_000_000 and letter.redrives == 0
    sample = metrics.get_sample_value
    assert sample("scenetrigger_deliveries_total",
                  {"channel": "crm", "result": "retry_exhausted"}) == 1
    assert sample("scenetrigger_dead_letters_total", {"channel": "crm"}) == 1
    assert sample("scenetrigger_delivery_seconds_count", {"channel": "crm"}) == 1


async def test_entries_filter_limit_and_undecodable(dead_letters: DeadLetterStore) -> None:
    sender = ChannelSender(ChannelRegistry(), dead_letters, metrics_registry=CollectorRegistry())
    assert sender.dead_letter is dead_letters
    for n in range(5):
        channel = "crm" if n % 2 == 0 else "sms"
        await dead_letters.add(message(n), channel,
                               DeliveryResult(False, channel, f"m-{n}", 2, "HTTP 503", True, 503))
    await dead_letters.redis.xadd(dead_letters.stream, {"channel": "crm", "message": b"{"})
    assert await dead_letters.count() == 6
    crm = [letter async for letter in dead_letters.entries("crm", batch=2)]
    assert [letter.message.message_id if letter.message else None for letter in crm] == \
        ["m-0", "m-2", "m-4", None]
    assert [letter.status for letter in crm[:3]] == [503, 503, 503]
    limited = [letter async for letter in dead_letters.entries(limit=2, batch=1)]
    assert len(limited) == 2
    assert await dead_letters.remove([crm[0].entry_id, crm[1].entry_id]) == 2
    assert await dead_letters.count() == 4


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
scenes: {{}}
channels:
  crm:
    type: webhook
    url: {url}
    secret_env: {SECRET_ENV}
    retry: {{max_attempts: 2, base_backoff: 10ms}}
  partner:
    type: webhook
    url: {url}
    secret_env: {SECRET_ENV}
    retry: {{max_attempts: 1}}
""")
    return path


async def test_redrive_resends_after_the_endpoint_recovers(
        dead_letters: DeadLetterStore, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SECRET_ENV, "redrive-secret")
    async with running_receiver(Receiver(b"redrive-secret", default=503)) as rx:
        hooks = {name: WebhookChannel(name, rx.url, b"redrive-secret",
                                      policy=RetryPolicy(max_attempts=2, base_backoff_ms=5))
                 for name in ("crm", "partner")}
        sender = ChannelSender(ChannelRegistry(dict(hooks)), dead_letters,
                               metrics_registry=CollectorRegistry())
        for n, channel in enumerate(["crm", "crm", "partner", "gone"]):
            if channel == "gone":  # a channel removed from config since
                await dead_letters.add(message(n, channel=channel), channel,
                                       await hooks["crm"].send(message(n)))
                continue
            assert not (await sender.send(message(n, channel=channel))).ok
        for hook in hooks.values():
            await hook.close()
        assert await dead_letters.count() == 4
        rx.requests.clear()

        config = _config(tmp_path, rx.url)
        base = ["redrive", "--config", str(config), "--redis-url", redis_url,
                "--stream", dead_letters.stream]

        async def redrive(*extra: str) -> int:
            return await asyncio.to_thread(main, [*base, *extra])

        rx.default = 200  # the endpoint recovers
        assert await redrive("--dry-run") == 0
        assert rx.requests == [] and await dead_letters.count() == 4
        assert "would be re-sent" in capsys.readouterr().err
        assert await redrive("--dry-run", "--json") == 0
        listed = capsys.readouterr()
        assert json.loads(listed.out) == {"dry_run": True, "matched": 4, "sent_ok": 0,
                                          "failed": 0, "skipped": 1, "failures": []}
        assert listed.err.count("user=") == 4  # the entries, off stdout

        assert await redrive("--channel", "crm", "--limit", "1") == 0
        assert len(rx.requests) == 1 and rx.requests[0].signature_ok
        assert await dead_letters.count() == 3

        rx.default = 503  # down again: failures stay, with the new error
        assert await redrive("--channel", "partner") == 1
        [partner] = [x for x in await all_letters(dead_letters) if x.channel == "partner"]
        assert (partner.redrives, partner.error, partner.attempts) == (1, "HTTP 503", 1)

        rx.default = 200
        rx.requests.clear()
        assert await redrive() == 0
        left = await all_letters(dead_letters)
        assert [letter.channel for letter in left] == ["gone"]  # unknown channel: kept
        assert sorted(r.headers["X-Scenetrigger-Message-Id"] for r in rx.requests) == \
            ["m-1", "m-2"]
        assert all(r.signature_ok for r in rx.requests)
        assert "1 skipped" in capsys.readouterr().err


async def test_dead_letters_with_a_decode_responses_client(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = DeadLetterStore(client, f"t:{uuid.uuid4().hex[:8]}:deadletter")
    try:
        msg = message(data={"price": 9.5})
        await store.add(msg, "crm", DeliveryResult(False, "crm", "m-1", 3, "HTTP 500", True, 500))
        [letter] = await all_letters(store)
        assert (letter.message, letter.status, letter.attempts) == (msg, 500, 3)
    finally:
        await client.aclose()


async def test_a_failed_dead_letter_write_is_counted_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Redis goes down while deliveries exhaust their retries: each dead letter
    not written is counted and logged with its ids, and raised (an
    infrastructure fault: the delivery's lease keeps it, to be tried again)."""
    server = start_redis(tmp_path / "redis")  # private: this test stops it
    client = aioredis.Redis.from_url(server.url)
    metrics = CollectorRegistry()
    try:
        async with running_receiver(Receiver(default=503)) as rx:
            hook = WebhookChannel("crm", rx.url, b"k",
                                  policy=RetryPolicy(max_attempts=2, base_backoff_ms=1))
            sender = ChannelSender(ChannelRegistry({"crm": hook}),
                                   DeadLetterStore(client, "t:deadletter"),
                                   metrics_registry=metrics)
            first = await sender.send(message(1))
            server.stop()
            with caplog.at_level("ERROR", logger="scenetrigger.channels"):
                for n in (2, 3):
                    with pytest.raises(RedisConnectionError):
                        await sender.send(message(n))
            await hook.close()
    finally:
        server.stop()
        await client.aclose()
    assert not first.ok
    assert len(rx.requests) == 6  # every delivery still made its attempts
    sample = metrics.get_sample_value
    assert sample("scenetrigger_dead_letters_total", {"channel": "crm"}) == 1
    assert sample("scenetrigger_dead_letter_write_failures_total", {"channel": "crm"}) == 2
    lost = [r for r in caplog.records if r.getMessage() == "dead-letter write failed"]
    assert [(r.message_id, r.trigger_id, r.channel) for r in lost] == [  # type: ignore[attr-defined]
        ("m-2", "t-2", "crm"), ("m-3", "t-3", "crm")]
