"""``scenetrigger collector`` as an operator runs it: a process on a port, real Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.agents.kafka_read import read_topic, unique_topic
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[2]


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def _wait_healthy(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes],
                        log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited {proc.returncode}:\n{_text(log)}")
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"collector not healthy in 60 s:\n{_text(log)}")


async def test_collector_command_serves_with_a_token(kafka_bootstrap: str, tmp_path: Path) -> None:
    events, dead = unique_topic("ev"), unique_topic("dl")
    port = free_port()
    log = tmp_path / "collector.log"
    env = {**os.environ, "SCENETRIGGER_COLLECTOR_TOKEN": "t0ken"}
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - a server for the test to talk to
            [sys.executable, "-m", "scenetrigger.cli.main", "collector", "--broker", kafka_bootstrap,
             "--port", str(port), "--topic", events, "--dead-letter-topic", dead],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_healthy(session, f"{base}/healthz", proc, log)
            body = orjson.dumps([{"user_id": "u", "ts": 1, "type": "view"}, {"ts": 2}])
            async with session.post(f"{base}/events", data=body) as resp:
                assert resp.status == 401
            headers = {"Authorization": "Bearer t0ken"}
            async with session.post(f"{base}/events", data=body, headers=headers) as resp:
                assert resp.status == 202
                assert (await resp.json())["accepted"] == 1
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert 'scenetrigger_collector_requests_total{status="401"} 1.0' in text
            assert 'scenetrigger_collector_requests_total{status="202"} 1.0' in text
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, _text(log)
    assert [r.key for r in await read_topic(kafka_bootstrap, events)] == [b"u"]
    assert len(await read_topic(kafka_bootstrap, dead)) == 1
