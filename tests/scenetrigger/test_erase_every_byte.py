"""Erasure covers every stored byte (issue 19: a truncated trigger record with
the user's id and email stayed in the dead-letter after `erase`, which
counted 1 of 2, and `export-user` listed none).

The user's id and email are planted in each kind of stored record, as the
product writes them and damaged (truncated JSON in the dead-letter as a
record and as a message, a binary record, a damaged deferred payload and
message-index entry); `export-user` lists the damaged ones; after `erase` a
SCAN of every key, reading every value of every type, finds neither the id
nor the email, while another user's records are all still there. Real
redis-server."""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from channels.policy.decide import deferred_key
from channels.policy.store import payload_key
from channels.redis_client import lease_bucket
from channels.transports.deadletter import DeadLetterStore
from scenetrigger.cli.main import main
from scenetrigger.ops.raw_match import RawMatcher
from tests.agents.test_worker_erase import config_text, fill_redis
from tests.services import start_redis

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
RUN = "byte"
USER, OTHER = "ann-42", "bob-7"
EMAIL = f"{USER}@example.com"  # fill_redis's address of the user


async def values_of(client: Redis) -> list[Any]:
    """Every key name and every value of every key, whatever its type; a
    base64 dead-letter raw decoded, as a reader would."""
    out: list[Any] = []
    async for key in client.scan_iter(count=1000):
        out.append(key)
        kind = (await client.type(key)).decode()  # type: ignore[union-attr]
        if kind == "string":
            out.append(await client.get(key) or b"")
        elif kind == "hash":
            out += [x for kv in (await client.hgetall(key)).items() for x in kv]
        elif kind == "list":
            out += await client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(await client.smembers(key))
        elif kind == "zset":
            members: list[Any] = await client.zrange(key, 0, -1, withscores=True)
            out += [m for m, _ in members]
        elif kind == "stream":
            for entry_id, fields in await client.xrange(key) or []:
                assert fields is not None
                out.append(entry_id)
                out += [x for kv in fields.items() for x in kv]
                if fields.get(b"encoding") == b"base64":
                    out.append(base64.b64decode(fields[b"message"] or b""))
        else:
            raise AssertionError(f"{key!r}: a type this test does not read: {kind}")
    return out


def mentions(values: list[Any], needle: str) -> list[bytes]:
    pattern = re.compile(re.escape(needle.encode()), re.IGNORECASE)
    raw = [v if isinstance(v, bytes) else v.encode() for v in values]
    return [v for v in raw if pattern.search(v)]


async def plant_damaged(client: Redis, user: str, email: str, stream: str) -> None:
    """Records of ``user`` that do not parse, in every store read by value."""
    letters = DeadLetterStore(client, stream)
    whole = orjson.dumps({"v": 1, "scene": "rv", "user_id": user, "email": email, "ts": 1})
    await letters.add_record("p.triggers/0/7", whole[:-12], "invalid_json", "truncated")
    await letters.add_record("p.triggers/0/8", b"\xff\xfe" + email.encode(), "invalid_json",
                             "not UTF-8")
    await letters.add_record("p.triggers/0/9", orjson.dumps([1, user, "x"]), "bad_field", "a list")
    await client.xadd(stream, {"channel": "inbox", "message": whole[:-5], "error": "down",
                               "attempts": 1, "retryable": 1, "status": "", "failed_ms": 1,
                               "redrives": 0})
    pending = deferred_key(f"er{RUN}:", lease_bucket(user))  # the user's bucket
    await client.hset(payload_key(pending), f"bad-{user}",
                      b'["t|' + user.encode() + b'|x", "' + user.encode() + b'", trunc')
    await client.zadd(pending, {f"bad-{user}": 1})
    await client.set(f"er{RUN}:msg:m-bad-{user}", b'["' + user.encode() + b'", "m')


async def test_erase_leaves_no_byte_of_the_user_and_export_lists_the_damaged(
        tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(RUN))
    stream = f"er{RUN}:dl"
    common = ["--config", str(cfg), "--redis-url", server.url, "--tags-prefix", f"er{RUN}t:",
              "--dead-letter-stream", stream]
    client = Redis.from_url(server.url)
    try:
        for who in (USER, OTHER):
            await fill_redis(server.url, cfg, RUN, who)
            await plant_damaged(client, who, f"{who}@example.com", stream)
        before = await values_of(client)
        assert mentions(before, USER) and mentions(before, EMAIL)
        other_before = len(mentions(before, OTHER))

        out = tmp_path / "export.json"
        assert await asyncio.to_thread(main, ["export-user", USER, *common, "--out",
                                              str(out)]) == 0
        exported = orjson.loads(out.read_bytes())
        sources = sorted(x["source"] for x in exported["dead_letters"] if x.get("source"))
        assert sources == ["p.triggers/0/7", "p.triggers/0/8", "p.triggers/0/9"]
        assert len(exported["dead_letters"]) == 5  # + the valid and the truncated message
        assert sorted(exported["keys"]["message_index"])[-1] == f"er{RUN}:msg:m-bad-{USER}"

        assert await asyncio.to_thread(main, ["erase", USER, *common, "--json"]) == 0
        after = await values_of(client)
        assert mentions(after, USER) == []
        assert mentions(after, EMAIL) == []
        gone = set(mentions(before, OTHER)) - set(mentions(after, OTHER))
        # Nobody else's record went. Bob shares one of her addresses, now on the
        # do-not-contact list: the hits kept beside his record are cleared (his
        # next decision looks them up again; channels.audience.recipient).
        assert gone == {f"er{RUN}:dnch:{{{OTHER}}}".encode()}, gone
        assert len(mentions(after, OTHER)) == other_before - 1
        assert await client.xlen(stream) == 5
    finally:
        await client.aclose()
        server.stop()


def test_raw_matching_takes_whole_ids_and_addresses_only() -> None:
    match = RawMatcher("u1", [("email", "Ann@Example.com"), ("phone", "+86 138 0000 0001")])
    assert match(b'{"user_id":"u1","ts":')
    assert match(b"request/rv|u1|p1|1")
    assert match(b'{"to":"ANN@example.COM"')
    assert match(b"+8613800000001 said TD")
    assert not match(b'{"user_id":"u10"}')
    assert not match(b'{"user_id":"xu1"}')
    assert not match(b'"u1@example.com"')
    assert not match(b'"jo.ann@example.com"')
    assert not match(None)
    short = RawMatcher("1")
    assert not short(b'{"v":1,"scene":"rv","user_id":"u7"}')
    assert short(b'{"v":1,"user_id":"1"')
    quoted = RawMatcher('say "hi"\u00e9')
    assert quoted(orjson.dumps({"user_id": 'say "hi"\u00e9'}))
