"""Poison events through the real processes (issue 11): a foreign producer
writes events with a poison value in every field that reaches a zone, a
template or a channel straight onto the events topic; the scene worker and
`deliver` (subprocesses, real Kafka and Redis, a real webhook) deliver every
good user's message, and every poison one is rejected with a reason, or
delivered, or dead-lettered: none stops the others."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from agents.producer import ensure_topics
from channels.transports.deadletter import DeadLetterStore
from tests.agents.kafka_read import read_topic
from tests.agents.worker_support import WorkerProcess, start_worker, unique
from tests.channels.receivers import serve_app
from tests.channels.test_deliver_kafka import PRODUCTS, produce, start_deliver
from tests.faults.test_poison_fields import FIELDS, POISON

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SCENE = "promo_arrival"


async def test_poison_events_through_worker_and_deliver(kafka_bootstrap: str, redis_url: str,
                                                        tmp_path: Path) -> None:
    run = unique("poison")
    got: set[str] = set()

    async def hook(request: Any) -> web.Response:
        got.add(orjson.loads(await request.read())["user_id"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    now = int(time.time() * 1000)
    far = (time.gmtime().tm_hour + 12) % 24
    goods = [f"g{i}" for i in range(20)]
    values: list[tuple[str, bytes]] = []
    for n, user in enumerate(goods):
        values.append((user, orjson.dumps({"user_id": user, "ts": now + n, "type": "page",
                                           "page": "/promo/a", "tz": "UTC"})))
    poisoned = []
    for f, field in enumerate(FIELDS):
        for p, value in enumerate(POISON):
            user = f"p{f}-{p}"
            poisoned.append(user)
            event = {"user_id": user, "ts": now + 100 + f * 50 + p, "type": "page",
                     "page": "/promo/a"}
            raw = orjson.dumps({k: v for k, v in event.items() if k != field})[:-1]
            values.append((user, raw + b',"' + field.encode() + b'":' + value + b"}"))
    values.sort(key=lambda kv: kv[0] in goods)  # the poison first: it must not block
    page_users = {f"p{FIELDS.index('page')}-{p}" for p in range(len(POISON))}
    procs: list[WorkerProcess] = []
    try:
        async with serve_app(app) as base:
            config = tmp_path / "config.yaml"
            config.write_text(yaml.safe_dump({
                "scenes": {SCENE: {"kind": "arrival", "when": {"page": {"prefix": "/promo"}},
                                   "per": "page"}},
                "channels": {"webhook": {"type": "webhook", "url": base + "/hook",
                                         "secret_env": "DELIVER_TEST_SECRET"}},
                "content": {"scenes": {SCENE: {"fallback": {
                    "channels": ["webhook"], "subject": "Hi ${user_id}",
                    "text": "${category} ${query} ${segment}"}}}},
                "delivery": {"default_timezone": "UTC",
                             # quiet hours read the zone; a minute 12 h away is never now
                             "quiet_hours": {"start": f"{far:02d}:00", "end": f"{far:02d}:01"},
                             "caps": {"per_day": None, "per_week": None},
                             "redis_prefix": f"{run}:"}}))
            catalog = tmp_path / "catalog.jsonl"
            catalog.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PRODUCTS))
            await ensure_topics(kafka_bootstrap, [f"{run}.events", f"{run}.triggers",
                                                  f"{run}.journey-actions"], 4)
            procs.append(start_worker(tmp_path, "w", kafka_bootstrap, run, run,
                                      ["--clock", "event", "--store", "memory"], config))
            procs.append(start_deliver(tmp_path, "d", kafka_bootstrap, run, f"{run}-d",
                                       config, catalog, redis_url))
            await produce(kafka_bootstrap, f"{run}.events", values)
            deadline = time.monotonic() + 150
            while not set(goods) <= got and time.monotonic() < deadline:
                for proc in procs:
                    assert proc.alive(), proc.log_tail()
                await asyncio.sleep(0.5)
            # Every poisoned event ends somewhere: wait until each is rejected or, if it
            # fired, decided by deliver (or the deadline; the accounting below then fails).
            while time.monotonic() < deadline:
                for proc in procs:
                    assert proc.alive(), proc.log_tail()
                fates = await _fates(kafka_bootstrap, run)
                undecided = fates.fired - fates.decided.keys()
                if set(poisoned) - set(fates.rejected) - fates.fired <= page_users \
                        and not undecided:
                    break
                await asyncio.sleep(0.5)
            for proc in procs:
                assert proc.alive(), proc.log_tail()
    finally:
        for proc in procs:
            if proc.alive():
                await asyncio.to_thread(proc.stop)
    assert set(goods) <= got, sorted(set(goods) - got)
    fates = await _fates(kafka_bootstrap, run)
    assert all(reason for reason in fates.rejected.values()), fates.rejected
    assert not set(fates.rejected) & set(goods), sorted(set(fates.rejected) & set(goods))
    rejected, fired = set(fates.rejected) & set(poisoned), fates.fired & set(poisoned)
    quiet = set(poisoned) - rejected - fired  # taken, fired nothing
    assert not rejected & fired, sorted(rejected & fired)
    assert quiet <= page_users, sorted(quiet - page_users)  # only a bad page misses /promo
    for user in fired:
        outcome, rule = fates.decided[user]
        assert outcome in {"delivered", "suppressed", "failed"}, (user, outcome, rule)
        assert (outcome == "delivered") == (user in got), (user, outcome)
        assert outcome != "suppressed" or rule, (user, outcome)
    delivered = {u for u in fired if fates.decided[u][0] == "delivered"}
    suppressed = {u for u in fired if fates.decided[u][0] == "suppressed"}
    failed = {u for u in fired if fates.decided[u][0] == "failed"}
    assert len(rejected) + len(quiet) + len(delivered) + len(suppressed) + len(failed) \
        == len(poisoned)
    assert got - set(goods) == delivered
    # A failed delivery is dead-lettered by deliver (its Redis stream), message and all.
    assert failed <= await _dead_lettered(redis_url, failed), failed
    print(f"poison live: {len(values)} events ({len(poisoned)} poisoned), all {len(goods)} "
          f"good users delivered; poisoned: {len(rejected)} rejected by the worker with a "
          f"reason, {len(quiet)} taken without firing, {len(delivered)} delivered, "
          f"{len(suppressed)} suppressed, {len(failed)} failed (dead-lettered)")


@dataclass
class _Fates:
    rejected: dict[str, str]  # user -> the worker's reason
    fired: set[str]  # users with a trigger
    decided: dict[str, tuple[str, str | None]]  # user -> deliver's (outcome, rule)


async def _dead_lettered(redis_url: str, users: set[str]) -> set[str]:
    """Which of ``users`` have a message in deliver's dead-letter stream."""
    client = aioredis.from_url(redis_url)
    try:
        return {letter.message.user_id async for letter in DeadLetterStore(client).entries()
                if letter.message is not None and letter.message.user_id in users}
    finally:
        await client.aclose()


async def _fates(bootstrap: str, run: str) -> _Fates:
    rejected = {r.key.decode(): orjson.loads(r.value)["reason"]
                for r in await read_topic(bootstrap, f"{run}.dead-letters", timeout_s=10)}
    fired = {orjson.loads(r.value)["user_id"]
             for r in await read_topic(bootstrap, f"{run}.triggers", timeout_s=10)}
    decided: dict[str, tuple[str, str | None]] = {}
    for record in await read_topic(bootstrap, f"{run}.decisions", timeout_s=10):
        decision = orjson.loads(record.value)
        if decision["outcome"] not in {"triggered", "refused"}:  # the worker's own records
            decided[decision["user_id"]] = (decision["outcome"], decision.get("rule"))
    return _Fates(rejected, fired, decided)
