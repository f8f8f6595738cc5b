"""Live profiles on real Kafka and a real redis-server: the worker's records
on the compacted ``PREFIX.profiles``, read by ``scenetrigger profiles`` into
the live profile store, give for every user of the rees46 sample exactly the
profile replay computes from the same events, before and after more events;
``scenetrigger erase`` deletes the key at once and writes a tombstone on the
topic (and the worker one more when it takes the erase event), which the
consumer applies; an unusable record is dead-lettered with its reason
(docs/ads.md, "Live profiles"; integration)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.export import read_topic
from channels.audience.live_profile import LiveProfileStore
from channels.redis_client import redis_client
from channels.transports.deadletter import DeadLetterStore
from config.hash_keys import HASH_KEY_ENV
from config.loader import load_config
from scenetrigger.runtime.replay import new_host, replay
from scenetrigger.runtime.sources import pick_format, read_for
from tests.agents.worker_support import (
    committed_offsets,
    send_raw,
    start_worker,
    unique,
    wait_for,
)
from tests.paths import REES46_SAMPLE
from tests.scenetrigger.test_catalog_live import topic_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
REPO = Path(__file__).resolve().parents[2]
EVENTS_IN_SAMPLE = 8721
SCENES = """
scenes:
  rv: {kind: repeat, when: {type: view}, per: product_id, count: 2, within: 1h}
"""
FIRST, SECOND = "541312140", "554748717"  # the sample's first two users
MORE: list[dict[str, Any]] = [  # after the sample (2019-10-01 ~ 02:00 UTC)
    {"user_id": FIRST, "ts": 1_569_898_800_000, "type": "search", "query": "water heater"},
    {"user_id": FIRST, "ts": 1_569_898_801_000, "type": "purchase", "product_id": "3900821",
     "price": 33.2, "category": "appliances.environment.water_heater"},
    {"user_id": SECOND, "ts": 1_569_898_802_000, "type": "view", "product_id": "1",
     "page": "/promo/october", "locale": "ru-RU"},
]


def cli(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1]) if done.stdout else {}
    return out


def replayed(config: Path, extra: list[dict[str, Any]]) -> dict[str, bytes]:
    """Each user's profile wire after the sample (and ``extra``), as replay computes it."""
    host = new_host(load_config(str(config)), profiles=True)
    with open(REES46_SAMPLE, "rb") as fh:
        fmt, lines = pick_format("auto", fh, str(REES46_SAMPLE))
        replay(read_for(host, lines, fmt), host, lambda _trig: None)
    replay([(n, host.decode_mapping(e)) for n, e in enumerate(extra, 1)], host,
           lambda _trig: None)
    return {user: orjson.dumps(state.profile.to_wire())
            for user, state in host.engine.store.items()}


async def stored(url: str, prefix: str, users: list[str]) -> dict[str, bytes | None]:
    client = redis_client(url)
    store = LiveProfileStore(client, prefix)
    try:
        out: dict[str, bytes | None] = {}
        for user in users:
            got = await store.get(user)
            out[user] = None if got is None else orjson.dumps(got.profile.to_wire())
        return out
    finally:
        await client.aclose()


def assert_same(url: str, prefix: str, expected: dict[str, bytes]) -> None:
    got = asyncio.run(stored(url, prefix, sorted(expected)))
    wrong = [u for u in expected if got[u] != expected[u]]
    assert not wrong, f"{len(wrong)} of {len(expected)} users differ, e.g. {wrong[:3]}: " \
                      f"{got[wrong[0]]!r} != {expected[wrong[0]]!r}"


def test_worker_profiles_reach_the_store_as_replay_computes_them(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "scenes.yaml"
    config.write_text(SCENES)
    prefix = unique("t-prof")
    topic = f"{prefix}.profiles"
    tags = f"tp{uuid.uuid4().hex[:6]}:"
    stream = f"{tags}deadletter"
    consume = ["profiles", "--broker", kafka_bootstrap, "--topic-prefix", prefix,
               "--group", f"{prefix}-profiles", "--redis-url", redis_url, "--tags-prefix", tags,
               "--dead-letter-stream", stream, "--until-end", "--json", "--no-progress"]
    cli("produce", str(REES46_SAMPLE), "--broker", kafka_bootstrap, "--topic",
        f"{prefix}.events", "--dead-letter-topic", f"{prefix}.produce-rejects",
        "--partitions", "4", "--no-progress")
    worker = start_worker(tmp_path, "a", kafka_bootstrap, prefix, prefix, config=config)

    def settled(events: int) -> None:
        wait_for("all events taken",
                 lambda: worker.metric("scenetrigger_events_total", result="accepted")
                 >= events, 240, [worker])
        wait_for("all offsets committed", lambda: _committed(kafka_bootstrap, prefix), 60,
                 [worker])
        # Every record the worker counted is on the topic.
        wait_for("the profile records sent", lambda: _end(kafka_bootstrap, topic) >= sum(
            worker.metric("scenetrigger_worker_profiles_total", op=op)
            for op in ("put", "tombstone")) > 0, 60, [worker])

    try:
        settled(EVENTS_IN_SAMPLE)
        assert asyncio.run(topic_config(kafka_bootstrap, topic))["cleanup.policy"] == "compact"
        first = cli(*consume)
        expected = replayed(config, [])
        assert len(expected) > 500
        # Once per user per settle: fewer records than events, at least one per user.
        assert len(expected) <= first["records"] < EVENTS_IN_SAMPLE
        assert first["malformed"] == {}
        assert_same(redis_url, tags, expected)

        send_raw(kafka_bootstrap, f"{prefix}.events",
                 [(e["user_id"].encode(), orjson.dumps(e)) for e in MORE])
        settled(EVENTS_IN_SAMPLE + len(MORE))
        cli(*consume)  # the same group: on from where it stopped
        later = replayed(config, MORE)
        assert later[FIRST] != expected[FIRST] and later[SECOND] != expected[SECOND]
        assert_same(redis_url, tags, later)

        # Erasure: the key goes at once, a tombstone goes on the topic.
        receipt = cli("erase", SECOND, "--broker", kafka_bootstrap, "--topic-prefix", prefix,
                      "--redis-url", redis_url, "--tags-prefix", tags, "--json",
                      env={HASH_KEY_ENV: "live-profiles-test-key"})
        assert receipt["removed"]["live_profile"] == 1
        assert asyncio.run(stored(redis_url, tags, [SECOND])) == {SECOND: None}
        wait_for("the worker's tombstone", lambda: worker.metric(
            "scenetrigger_worker_profiles_total", op="tombstone") >= 1, 60, [worker])
        wait_for("the records on the topic", lambda: _end(kafka_bootstrap, topic) >= sum(
            worker.metric("scenetrigger_worker_profiles_total", op=op)
            for op in ("put", "tombstone")) + 1, 60, [worker])
        records = asyncio.run(read_topic(kafka_bootstrap, topic, 30))
        tombstones = [r for r in records if r.value is None]
        assert [r.key for r in tombstones] == [SECOND.encode()] * 2  # the command's, the worker's

        # Bad records among good ones: dead-lettered with their reasons, the rest applied.
        # (A compacted topic refuses a record without a key.)
        good = next(r.value for r in records if r.value is not None)
        send_raw(kafka_bootstrap, topic, [(b"mallory", b"{not json"), (b"\xff", good),
                                          (b"trent", b'["1", []]')])
        third = cli(*consume)
        assert third["malformed"] == {"invalid_json": 1, "bad_field": 2}
        assert third["results"]["deleted"] >= 1
        assert asyncio.run(stored(redis_url, tags, [SECOND, "mallory"])) == {
            SECOND: None, "mallory": None}
        assert_same(redis_url, tags, {u: w for u, w in later.items() if u != SECOND})
        letters = asyncio.run(_dead_letters(redis_url, stream))
        assert sorted(letters) == sorted([("record", "bad_field", good, topic),
                                          ("record", "bad_field", b'["1", []]', topic),
                                          ("record", "invalid_json", b"{not json", topic)])
    finally:
        worker.stop()


def _committed(bootstrap: str, prefix: str) -> bool:
    committed, ends = committed_offsets(bootstrap, prefix, f"{prefix}.events")
    return sum(ends.values()) > 0 and all(committed.get(p, -1) >= e for p, e in ends.items() if e)


def _end(bootstrap: str, topic: str) -> int:
    return sum(committed_offsets(bootstrap, "nobody", topic)[1].values())


async def _dead_letters(url: str, stream: str) -> list[tuple[str, str, bytes, str]]:
    """(kind, reason, raw record, topic) of each entry, as redrive and the console read them."""
    client = redis_client(url)
    try:
        return [(letter.kind, letter.error.partition(":")[0], letter.raw,
                 letter.source.rsplit("/", 2)[0])
                async for letter in DeadLetterStore(client, stream).entries()]
    finally:
        await client.aclose()
