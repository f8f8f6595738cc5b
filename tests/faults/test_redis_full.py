"""A full Redis never ends `deliver` (issue 19: with `maxmemory` reached,
`noeviction` and AOF on, OutOfMemoryError while writing a dead letter ended
the process about 4 s after each restart). Real Kafka, a real redis-server
filled to its `maxmemory` while a real `deliver` runs, a real webhook
receiver; then the memory is freed.

What must hold: the process never exits; every trigger is received by the
webhook (the receiver dedupes by Idempotency-Key) and every malformed record
is in the dead-letter exactly once, as without the fault; no trigger is
dead-lettered; the fault was counted (scenetrigger_infra_errors_total) and
the wait shown (scenetrigger_infra_waiting) while Redis was full.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web
from redis.exceptions import OutOfMemoryError

from agents.producer import ensure_topics
from channels.pipeline import message_id_for
from channels.transports.deadletter import DeadLetterStore
from tests.agents.worker_support import WorkerProcess, unique
from tests.channels.receivers import serve_app
from tests.channels.test_deliver_kafka import PRODUCTS, produce, start_deliver
from tests.faults.test_deliver_kill import _config
from tests.services import start_redis
from triggers.events import Trigger
from triggers.wire import encode_trigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(280)]
SCENE = "promo_arrival"
BEFORE, DURING = 60, 240  # triggers sent before Redis fills, and while it is full
BAD = 4  # malformed records in each part (truncated JSON)
JUNK = b"x" * 65_536


class Sink:
    def __init__(self) -> None:
        self.accepted: list[str] = []

    async def handle(self, request: Any) -> web.Response:
        await request.read()
        self.accepted.append(request.headers["Idempotency-Key"])
        return web.Response(status=200, text="ok")


def truncated(user: str) -> bytes:
    whole = orjson.dumps({"v": 1, "scene": SCENE, "user_id": user,
                          "email": f"{user}@example.com", "ts": 1})
    return whole[: len(whole) - 9]


async def fill(client: aioredis.Redis, full: asyncio.Event, stop: asyncio.Event) -> int:
    """Set maxmemory a little above what is used (noeviction), write 64 KiB
    values until Redis refuses, then keep it at the limit with small ones
    until ``stop`` (memory freed by others, e.g. a query buffer, is taken
    again at once). Returns how many junk keys it wrote."""
    await client.config_set("maxmemory-policy", "noeviction")
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", str(used + 4 * 1024 * 1024))
    n = 0
    value = JUNK
    while not stop.is_set():
        try:
            await client.set(f"junk:{n}", value)
            n += 1
        except OutOfMemoryError:
            full.set()
            value = b"x" * 64
            await asyncio.sleep(0.005)
    return n


async def until(what: str, check: Any, timeout_s: float, proc: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        assert proc.alive(), f"deliver exited waiting for {what}:\n{proc.log_tail()}"
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}:\n{proc.log_tail()}")


async def test_deliver_waits_out_a_full_redis_and_loses_nothing(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    run = unique("full")
    redis = start_redis(tmp_path / "redis", aof=True)
    sink = Sink()
    app = web.Application()
    app.router.add_post("/hook", sink.handle)
    client = aioredis.Redis.from_url(redis.url)
    proc: WorkerProcess | None = None
    filler: asyncio.Task[int] | None = None
    try:
        async with serve_app(app) as base:
            config = tmp_path / "deliver.yaml"
            config.write_text(yaml.safe_dump(_config(base + "/hook", run)))
            catalog = tmp_path / "catalog.jsonl"
            catalog.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PRODUCTS))
            topic = f"{run}.triggers"
            await ensure_topics(kafka_bootstrap, [topic, f"{run}.journey-actions"], 4)
            now = int(time.time() * 1000)
            triggers = [Trigger(SCENE, f"u{i}", None, now + i) for i in range(BEFORE + DURING)]
            by_message = {message_id_for(t.trigger_id, "webhook"): t.trigger_id
                          for t in triggers}
            store = DeadLetterStore(client, "scenetrigger:deadletter")

            async def buried() -> list[str]:
                return [x.source async for x in store.entries()]

            def received() -> set[str]:
                return {by_message[k] for k in sink.accepted}

            async def part(start: int, stop: int, bad: str) -> None:
                values = [(t.user_id, encode_trigger(t, now)) for t in triggers[start:stop]]
                values += [(f"{bad}{i}", truncated(f"{bad}{i}")) for i in range(BAD)]
                await produce(kafka_bootstrap, topic, values)

            await part(0, BEFORE, "m")
            proc = start_deliver(tmp_path, "d", kafka_bootstrap, run, f"{run}-g", config,
                                 catalog, redis.url)
            first = {t.trigger_id for t in triggers[:BEFORE]}

            async def first_part_done() -> bool:
                return received() >= first and len(await buried()) == BAD

            await until("the first part", first_part_done, 90, proc)
            full, freed = asyncio.Event(), asyncio.Event()
            filler = asyncio.create_task(fill(client, full, freed))
            await asyncio.wait_for(full.wait(), 60)
            await part(BEFORE, BEFORE + DURING, "n")

            async def refused() -> bool:
                return (proc is not None and proc.metric(
                    "scenetrigger_infra_errors_total", component="deliver", fault="oom") > 0
                    and proc.metric("scenetrigger_infra_waiting", component="deliver") > 0)

            await until("deliver to meet the full Redis", refused, 60, proc)
            full_since = time.monotonic()
            while time.monotonic() - full_since < 8:  # it used to exit ~4 s in
                assert proc.alive(), proc.log_tail()
                await asyncio.sleep(0.5)
            waited = proc.metric("scenetrigger_infra_errors_total", component="deliver",
                                 fault="oom")
            freed.set()
            junk = await filler
            for start in range(0, junk, 500):  # free the memory
                await client.delete(*(f"junk:{n}" for n in range(start, min(start + 500, junk))))
            expected = {t.trigger_id for t in triggers}

            async def all_done() -> bool:
                pending = await client.zcard(f"{run}:deferred")
                return received() >= expected and len(await buried()) == 2 * BAD \
                    and pending == 0

            await until("every trigger and dead letter", all_done, 120, proc)
            assert proc.alive(), proc.log_tail()
            letters = [x async for x in store.entries()]
    finally:
        if proc is not None:
            await asyncio.to_thread(proc.stop)
        if filler is not None and not filler.done():
            filler.cancel()
        await client.aclose()
        redis.stop()
    lost = expected - received()
    print(f"deliver under a full Redis: sent {len(triggers)} triggers + {2 * BAD} malformed, "
          f"received {len(received())}, dead-lettered {len(letters)}, lost {len(lost)}, "
          f"{int(waited)} OOM refusals waited out, {junk} junk keys")
    assert lost == set()
    assert [x.kind for x in letters] == ["record"] * (2 * BAD)  # no trigger dead-lettered
    assert {x.raw for x in letters} == {truncated(f"{b}{i}") for b in "mn" for i in range(BAD)}
    assert len({x.source for x in letters}) == 2 * BAD  # each once
    assert proc is not None and proc.process.returncode == 0  # it stopped on SIGTERM, never on its own
