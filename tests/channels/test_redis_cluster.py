"""The product on a real Redis Cluster (3 masters, 3 replicas on loopback),
named by the plain ``redis://HOST:PORT/0`` of one node: ``users import``,
``replay --deliver live`` (twice: each user is mailed once), ``export-user``
and ``erase`` through the CLI. Afterwards no key or value on any master names
the erased user, and the keys are spread over every master."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from tests.channels.receivers import SmtpSink
from tests.services import RedisCluster, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
CLI = Path(sys.executable).with_name("scenetrigger")
USERS = 40
T0 = 1_780_000_000_000  # 2026-05-28 20:26 UTC: outside quiet hours in UTC


def config_text(prefix: str, smtp_port: int) -> str:
    return f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery:
  redis_prefix: "{prefix}"
  default_timezone: UTC
  tracking: {{base_url: "http://127.0.0.1:9"}}
  quiet_hours: {{enabled: false}}
  caps: {{per_day: 100, per_week: 100}}
channels:
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none,
          sender: "Shop <news@shop.example>",
          postal_address: "Shop Ltd, 1 Main St, Springfield"}}
content:
  scenes:
    promo_arrival:
      fallback: {{channels: [mail], subject: "Deals", text: "The promo is on."}}
"""


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def node_contents(port: int) -> dict[str, str]:
    """Every key on one node with its value as text (any type)."""
    client = Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        out = {}
        async for key in client.scan_iter(count=1000):
            kind = await client.type(key)
            if kind == "string":
                value: Any = await client.get(key)
            elif kind == "hash":
                value = await client.hgetall(key)
            elif kind == "set":
                value = sorted(await client.smembers(key))
            elif kind == "zset":
                value = await client.zrange(key, 0, -1)
            elif kind == "stream":
                value = await client.xrange(key)
            elif kind == "list":
                value = await client.lrange(key, 0, -1)
            else:
                value = None
            out[key] = str(value)
        return out
    finally:
        await client.aclose()


async def test_import_deliver_twice_and_erase_on_a_redis_cluster(
        redis_cluster: RedisCluster, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"rc{run}:"
    url = redis_cluster.url
    assert url.startswith("redis://") and url.endswith("/0")  # one node, no cluster hint
    users = [f"cl{run}-{i:03d}" for i in range(USERS)]
    table = tmp_path / "users.csv"
    table.write_text("user_id,email\n" + "".join(f"{u},{u}@example.com\n" for u in users),
                     encoding="utf-8")
    code, out, err = await cli("users", "import", str(table), "--redis-url", url,
                               "--prefix", prefix, "--json")
    assert code == 0, err.decode()
    assert orjson.loads(out)["imported"] == USERS

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(
        orjson.dumps({"user_id": u, "ts": T0 + i * 1000, "type": "page", "page": "/promo/a"})
        + b"\n" for i, u in enumerate(users)))
    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    cfg = tmp_path / "live.yaml"
    cfg.write_text(config_text(prefix, smtp.port))
    env = {"SCENETRIGGER_TRACKING_SECRET": "cluster-tracking-secret"}
    try:
        outcomes = []
        for attempt in ("first", "again"):  # the same triggers replayed twice
            out_file = tmp_path / f"{attempt}.jsonl"
            code, _, err = await cli("replay", str(events), "--config", str(cfg), "--deliver",
                                     "live", "--redis-url", url, "--out", str(out_file),
                                     "--no-progress", env=env)
            assert code == 0, err.decode()
            outcomes.append([orjson.loads(line) for line in out_file.read_bytes().splitlines()])
    finally:
        smtp.stop()
    first, again = outcomes
    assert Counter(r["delivery"] for r in first) == {"delivered": USERS}
    assert Counter((r["delivery"], r["reason"]) for r in again) == {
        ("suppressed", "duplicate"): USERS}
    mailed = Counter(rcpt for _from, rcpts, _mail in sink.received for rcpt in rcpts)
    assert mailed == {f"{u}@example.com": 1 for u in users}  # each user once

    masters = redis_cluster.masters()
    assert len(masters) == 3
    before = {port: await node_contents(port) for port in masters}
    ours = {port: [k for k in keys if k.startswith(prefix)] for port, keys in before.items()}
    print(f"keys per master: {sorted(len(k) for k in ours.values())}")
    assert all(ours.values()), {p: len(k) for p, k in ours.items()}  # on every master
    assert all(len(keys) < 0.6 * sum(map(len, ours.values())) for keys in ours.values())

    gone = users[7]
    code, out, err = await cli("export-user", gone, "--config", str(cfg), "--redis-url", url)
    assert code == 0, err.decode()
    exported = orjson.loads(out)
    assert {"directory", "engagement", "dedupe"} <= set(exported["keys"]), exported["keys"]
    code, out, err = await cli("erase", gone, "--config", str(cfg), "--redis-url", url,
                               "--json")
    assert code == 0, err.decode()
    assert orjson.loads(out)["removed"]["directory"] == 1

    after = {port: await node_contents(port) for port in redis_cluster.masters()}
    naming = [(port, key) for port, contents in after.items() for key, value in contents.items()
              if gone in key or gone in value]
    assert naming == []
    kept = users[8]  # the others are untouched
    assert any(kept in key for contents in after.values() for key in contents)


async def test_inbox_and_catalog_on_a_redis_cluster(redis_cluster: RedisCluster,
                                                    tmp_path: Path) -> None:
    """The inbox's batched add (a script per message: a cluster pipeline
    cannot load scripts) and `catalog load` (keys of many slots)."""
    from channels.base import Message
    from channels.content.catalog import RedisCatalog
    from channels.redis_client import redis_client
    from channels.transports.inbox import InboxStore

    run = uuid.uuid4().hex[:8]
    client = redis_client(redis_cluster.url)
    text = redis_client(redis_cluster.url, decode_responses=True)
    try:
        store = InboxStore(client, f"rc{run}:inbox")
        messages = [Message(f"m{i}", f"t{i}", f"u{i % 5}", "s", "inbox", "subject", "text",
                            None, {}, T0) for i in range(20)]
        assert await store.add_many(messages) == [True] * 20
        assert await store.add_many(messages[:3]) == [False] * 3  # duplicates, by id
        listed = await store.list("u1", unread_only=False)
        assert sorted(item.message["message_id"] for item in listed) == [
            "m1", "m11", "m16", "m6"]
        assert await store.ack("u1", ["m6"]) == 1
        assert len(await store.list("u1")) == 3

        products = tmp_path / "products.jsonl"
        products.write_bytes(b"".join(orjson.dumps(
            {"product_id": f"p{i}", "name": f"P {i}", "category": f"c{i % 4}", "price": 10 + i})
            + b"\n" for i in range(30)))
        code, _, err = await cli("catalog", "load", str(products), "--redis-url",
                                 redis_cluster.url, "--prefix", f"rc{run}:cat:")
        assert code == 0, err.decode()
        catalog = RedisCatalog(text, f"rc{run}:cat:")
        found = await catalog.get_many([f"p{i}" for i in range(30)])
        assert len(found) == 30 and found["p7"].category == "c3"
        assert [p.product_id for p in await catalog.in_category("c1", 3)] != []
    finally:
        await client.aclose()
        await text.aclose()


async def test_deliver_warns_unless_every_master_keeps_an_append_only_file(
        redis_cluster: RedisCluster) -> None:
    from channels.redis_client import redis_client
    from scenetrigger.cli.run.deliver import persistence_warning

    masters = redis_cluster.masters()
    nodes = [Redis(host="127.0.0.1", port=port) for port in masters]
    client = redis_client(redis_cluster.url, decode_responses=True)
    try:
        for node in nodes[:-1]:
            await node.config_set("appendonly", "yes")
        warning = await persistence_warning(client)  # one master still without
        assert warning is not None and "append-only" in warning
        await nodes[-1].config_set("appendonly", "yes")
        assert await persistence_warning(client) is None
    finally:
        for node in nodes:
            await node.config_set("appendonly", "no")
            await node.aclose()
        await client.aclose()
