"""Dead letters survive a Redis restart (issue 11: a Redis without
persistence erased 219 of them; the shipped compose ran Redis that way).
With the AOF fsynced on every write, as deploy/docker-compose.yml now runs
it, a kill -9 of Redis loses none; without persistence all are gone, which
is why docs/guarantees.md requires it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from channels.base import DeliveryResult
from channels.transports.deadletter import DeadLetterStore
from tests.channels.receivers import message
from tests.services import start_redis

pytestmark = pytest.mark.integration
LETTERS = 300


async def _bury_and_restart(run_dir: Path, aof: bool) -> tuple[int, int, Counter[str]]:
    server = start_redis(run_dir, aof=aof)
    client = aioredis.Redis.from_url(server.url)
    try:
        store = DeadLetterStore(client, "t:deadletter")
        failed = DeliveryResult(False, "crm", "m", 3, "HTTP 503", True, 503)
        for n in range(LETTERS):
            if n % 3 == 0:
                await store.add_record(f"p.triggers/0/{n}", b"\xff raw", "error", "boom")
            else:
                await store.add(message(n), "crm", failed)
        before = await store.count()
    finally:
        await client.aclose()
    server.kill()
    again = start_redis(run_dir, aof=aof, port=server.port)
    client = aioredis.Redis.from_url(again.url)
    try:
        after = await DeadLetterStore(client, "t:deadletter").count()
        letters = [x async for x in DeadLetterStore(client, "t:deadletter").entries()]
        kinds = Counter(x.kind for x in letters)
        # Each record letter kept its raw bytes (counted below: none vacuous).
        assert [x.raw for x in letters if x.kind == "record"] == [b"\xff raw"] * kinds["record"]
    finally:
        await client.aclose()
        again.stop()
    return before, after, kinds


async def test_dead_letters_survive_a_kill_9_of_redis_with_aof(tmp_path: Path) -> None:
    before, after, kinds = await _bury_and_restart(tmp_path / "aof", aof=True)
    assert (before, after) == (LETTERS, LETTERS)  # 0 lost
    records = len(range(0, LETTERS, 3))  # every third one was a raw record
    assert kinds == {"record": records, "message": LETTERS - records}  # each one accounted for


async def test_without_persistence_a_restart_erases_them(tmp_path: Path) -> None:
    before, after, kinds = await _bury_and_restart(tmp_path / "volatile", aof=False)
    assert (before, after, sum(kinds.values())) == (LETTERS, 0, 0)  # the failure the AOF requirement prevents


async def test_deliver_warns_about_a_redis_without_persistence(tmp_path: Path) -> None:
    from scenetrigger.cli.run.deliver import persistence_warning

    for aof, warned in ((False, True), (True, False)):
        server = start_redis(tmp_path / f"r{aof}", aof=aof)
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            warning = await persistence_warning(client)
        finally:
            await client.aclose()
            server.stop()
        assert (warning is not None) == warned
        assert warning is None or "append-only" in warning
