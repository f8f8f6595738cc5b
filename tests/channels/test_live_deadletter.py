"""`replay --deliver live`: deliveries that exhaust their retries land in the
Redis dead-letter stream (real redis-server, real aiohttp endpoint answering 500)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from channels.transports.deadletter import DEFAULT_STREAM, DeadLetterStore
from tests.channels.receivers import Receiver, running_receiver

CLI = Path(sys.executable).with_name("scenetrigger")
ATTEMPTS = 3
T0 = 1_700_000_000_000


def config_text(url: str, prefix: str, channel: str) -> str:
    return f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
content:
  scenes:
    promo_arrival:
      fallback: {{channels: [{channel}], subject: "Deals", text: "On now"}}
delivery:
  quiet_hours: {{enabled: false}}
  redis_prefix: "{prefix}"
channels:
  {channel}:
    type: webhook
    url: "{url}"
    secret_env: DL_TEST_SECRET
    timeout: 2s
    retry: {{max_attempts: {ATTEMPTS}, base_backoff: 1, max_backoff: 5}}
"""


def stream_id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_live_replay_dead_letters_exhausted_deliveries(redis_url: str,
                                                             tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    channel = f"hook_{run}"
    users = [f"dl{run}-{i}" for i in range(3)]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(
        orjson.dumps({"user_id": u, "ts": T0 + i * 1000, "type": "page", "page": "/promo/a"})
        + b"\n" for i, u in enumerate(users)))
    client = Redis.from_url(redis_url)
    store = DeadLetterStore(client)
    before = await store.last_id() or "0-0"
    try:
        async with running_receiver(Receiver(secret=b"dl-secret", default=500)) as receiver:
            cfg = tmp_path / "live.yaml"
            cfg.write_text(config_text(receiver.url, f"dl{run}:", channel))
            out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
            proc = await asyncio.create_subprocess_exec(
                str(CLI), "replay", str(events), "--config", str(cfg), "--deliver", "live",
                "--redis-url", redis_url, "--out", str(out), "--summary-json", str(summary),
                "--no-progress", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "DL_TEST_SECRET": "dl-secret"})
            _, err = await asyncio.wait_for(proc.communicate(), 90)
            assert proc.returncode == 0, err.decode()

        records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert [(r["user_id"], r["delivery"]) for r in records] == [(u, "failed") for u in users]
        assert orjson.loads(summary.read_bytes())["delivery"]["failed"] == len(users)
        # Every message was tried ATTEMPTS times, with a valid signature, and refused.
        assert len(receiver.requests) == ATTEMPTS * len(users)
        assert len(receiver.ok_requests) == len(receiver.requests)

        letters = [letter async for letter in store.entries(channel=channel)
                   if stream_id(letter.entry_id) > stream_id(before)]
        assert len(letters) == len(users)
        assert sorted(letter.message.user_id for letter in letters
                      if letter.message is not None) == sorted(users)
        for letter in letters:
            assert letter.attempts == ATTEMPTS
            assert letter.status == 500 and "500" in letter.error
            assert letter.retryable
        assert (await client.xlen(DEFAULT_STREAM)) >= len(users)
    finally:
        await client.aclose()
