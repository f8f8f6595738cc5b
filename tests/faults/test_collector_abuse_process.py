"""`scenetrigger collector` abused over loopback (issue 11): an 8 MB array of
4 M zeros (it took RSS from 100 MB to 10.4 GB and blocked the loop 74 s),
a field nested 300 deep beside a good event (a 500 that lost the good
event), a body sent one byte a second, an anonymous start. The process's RSS
stays bounded and the good event is stored."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.agents.kafka_read import read_topic, unique_topic
from tests.agents.test_collector_cli import _wait_healthy
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_the_collector_refuses_to_start_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCENETRIGGER_COLLECTOR_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "collector", "--broker",
                           "127.0.0.1:1"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode != 0 and "--no-auth" in done.stderr


async def test_abuse_leaves_rss_bounded_and_the_good_event_stored(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    events, dead = unique_topic("ev"), unique_topic("dl")
    port = free_port()
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - a server for the test to talk to
            [sys.executable, "-m", "scenetrigger.cli.main", "collector", "--broker", kafka_bootstrap,
             "--port", str(port), "--topic", events, "--dead-letter-topic", dead,
             "--read-timeout", "2"],
            cwd=REPO, env={**os.environ, "SCENETRIGGER_COLLECTOR_TOKEN": "t0ken"},
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer t0ken"}
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_healthy(session, f"{base}/healthz", proc, log)
            start = rss_mb(proc.pid)
            zeros = b"[" + b",".join([b"0"] * 4_000_000) + b"]"
            for _ in range(3):
                async with session.post(f"{base}/events", data=io.BytesIO(zeros),
                                        headers=auth) as resp:
                    assert resp.status == 413
            event = {"user_id": "good", "ts": 1, "type": "view"}
            deep = (b"[" + orjson.dumps(event) + b',{"user_id":"bad","ts":1,"type":"view","x":'
                    + b"[" * 300 + b"]" * 300 + b"}]")
            async with session.post(f"{base}/events", data=deep, headers=auth) as resp:
                body = await resp.json()
                assert resp.status == 202 and body["accepted"] == 1, body
                assert body["errors"][0]["reason"] == "too_deep"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n"
                         b"Content-Length: 100\r\n\r\n[")
            await writer.drain()
            status = (await asyncio.wait_for(reader.readline(), 10)).split()[1]
            writer.close()
            assert status == b"408"
            peak = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"collector RSS {start:.0f} MB at start, {peak:.0f} MB after 3 x 8 MB arrays of "
          f"4 M zeros, deep nesting and a slow body")
    assert peak - start < 200  # was +10 GB
    assert [r.key for r in await read_topic(kafka_bootstrap, events)] == [b"good"]
