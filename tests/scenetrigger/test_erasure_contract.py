"""Erasure's contract key by key (scenetrigger.ops.erasure): for a user with
data of every kind the module's docstring lists, ``find`` names exactly the
user's keys (not a neighbour's, not another user's in the same bucket),
``export`` gives each value as stored (every Redis type, damaged values raw),
``erase`` removes exactly those and stores the receipt it returns, under
``{p}erasure:HMAC-SHA256(K, "erasure\\n" + hex(SHA256("erasure\\n" + id)))``,
with the user's contact points on the do-not-contact list. Key names are
written out here from the documented forms; the keyed hashes computed with
hmac/hashlib (docs/security.md). Real redis-server (one per session)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from channels.audience.directory import RedisDirectory, contact_from
from channels.base import DeliveryResult, Message
from channels.erasure_receipts import erased_at
from channels.feedback.events import MessageMeta, RedisMessageIndex
from channels.policy.decide import DeliveryRequest
from channels.redis_client import lease_bucket
from channels.transports.deadletter import DeadLetterStore
from config.hash_keys import HashKeys
from config.loader import load_config_text
from config.models import AppConfig
from scenetrigger.ops.erasure import Eraser, Found

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
K = b"erasure-contract-key"
KEYS = HashKeys(K)
SCENES = "scenes: {rv: {kind: arrival, when: {type: page}}}\n"
NOW = 1_700_000_000_000


def mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def subject(user: str, key: bytes = K) -> str:
    return mac(key, "erasure\n" + sha(f"erasure\n{user}"))


def dnc_name(prefix: str, kind: str, normal: str) -> str:
    return f"{prefix}dnc:{mac(K, 'dnc' + chr(10) + sha(f'{kind}{chr(10)}{normal}'))}"


def bucket(user: str) -> str:
    return f"{{d{lease_bucket(user):02d}}}"


def same_bucket_as(user: str) -> str:
    """Another user id whose pending bucket is ``user``'s."""
    return next(f"x{n}" for n in range(10_000) if lease_bucket(f"x{n}") == lease_bucket(user))


def config(prefix: str, extra: str = "") -> AppConfig:
    return load_config_text(SCENES + f'delivery: {{redis_prefix: "{prefix}"}}\n' + extra)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_url)  # bytes, as the module must also read
    yield redis
    await redis.aclose()


async def every_key(redis: Redis, prefix: str) -> set[str]:
    return {k.decode() async for k in redis.scan_iter(match=f"{prefix}*", count=1000)}


def request(trigger_id: str, user: str) -> str:
    return DeliveryRequest(trigger_id, user, "rv", "p1", 1, ("inbox",)).encode()


async def plant(redis: Redis, p: str, t: str, user: str) -> dict[str, list[str]]:
    """Data of ``user`` of every kind; returns the keys by the receipt's kind."""
    u = f"{{{user}}}"
    await RedisDirectory(redis, p).put(contact_from(user, {
        "email": f"{user}@Example.com", "phone": "+86 138 0000 0001"}))
    direct = {"do_not_contact_hits": f"{p}dnch:{u}", "consent": f"{p}consent:{u}",
              "ad_sync_state": f"{p}ads:{u}", "engagement": f"{p}eng:{u}",
              "tags": f"{t}tags:{u}", "score": f"{t}score:{u}", "live_profile": f"{t}profile:{u}"}
    for key in direct.values():
        await redis.set(key, "1")
    keys = {kind: [key] for kind, key in direct.items()}
    keys["directory"] = [f"{p}user:{u}"]
    keys["address_index"] = [f"{p}addr:email:{sha(f'email{chr(10)}{user}@example.com')}"]
    keys["caps"] = [f"{p}cap:{u}:all:d:20000", f"{p}cap:{u}:ch:sms:w:3000"]
    keys["dedupe"] = [f"{p}dd:{bucket(user)}:j|winback|v1|{user}|entered",
                      f"{p}dd:{bucket(user)}:rv|{user}|p1|1"]
    keys[f"inbox {p}inbox"] = [f"{p}inbox:{u}", f"{p}inbox:{u}:acked"]
    for kind in ("caps", "dedupe", f"inbox {p}inbox"):
        for key in keys[kind]:
            await redis.set(key, "1")
    index = RedisMessageIndex(redis, p)
    await index.remember(f"m1-{user}", MessageMeta(user, "rv", "inbox"))
    await redis.set(f"{p}msg:m2-{user}", b'["' + user.encode() + b'", "rv", "in')  # damaged
    keys["message_index"] = [f"{p}msg:m1-{user}", f"{p}msg:m2-{user}"]
    assert await index.first("opened", f"m1-{user}")
    assert await index.first("clicked", f"m1-{user}", "https://x.example/a")
    await redis.set(f"{p}once:opened:rv|{user}|p2|1|inbox", "1")  # its index entry expired
    await redis.set(f"{p}once:opened:slot:home:a:5:{user}", "1")
    keys["feedback_markers"] = sorted([
        f"{p}once:clicked:m1-{user}", f"{p}once:opened:m1-{user}",
        f"{p}once:opened:rv|{user}|p2|1|inbox", f"{p}once:opened:slot:home:a:5:{user}"])
    await redis.hset(f"{t}journeys", user, b"\x01state")
    pending = f"{p}deferred:{bucket(user)}"
    await redis.hset(f"{pending}:payload", mapping={
        f"r1-{user}": request(f"rv|{user}|p1|1", user),
        f"r2-{user}": b'["rv|' + user.encode() + b'|p9|1", "' + user.encode() + b'", tr'})
    await redis.zadd(pending, {f"r1-{user}": 1, f"r2-{user}": 2})
    await redis.hset(f"{pending}:tries", f"r1-{user}", 1)
    letters = DeadLetterStore(redis, f"{p}dl")
    await letters.add(Message(f"m1-{user}", "t", user, "rv", "inbox", "s", "x"), "inbox",
                      DeliveryResult(False, "inbox", f"m1-{user}", 3, "down", True))
    await letters.add_record("p.triggers/0/7", f'{{"user_id":"{user}","ts'.encode(),
                             "invalid_json", "truncated")
    return keys


async def plant_neighbours(redis: Redis, p: str, user: str) -> list[str]:
    """Keys a pattern scan for ``user`` reaches that are someone else's."""
    near = same_bucket_as(user)
    keys = [f"{p}cap:{{{user}}}:x}}:all:d:20000",  # user "USER}:x"
            f"{p}dd:{bucket(user)}:j|winback|{user}|{near}|entered",  # near's journey
            f"{p}once:opened:j|winback|{user}|{near}|entered|sms",
            f"{p}once:opened:slot:home:a:x:{user}",  # not an impression id (no time)
            f"{p}inbox:{{{user}}}x}}",  # user "USER}x"
            f"{p}msg:m-{near}"]
    for key in keys[:-1]:
        await redis.set(key, "1")
    await RedisMessageIndex(redis, p).remember(f"m-{near}", MessageMeta(near, "rv", "sms"))
    pending = f"{p}deferred:{bucket(user)}"
    await redis.hset(f"{pending}:payload", mapping={
        f"r-{near}": request(f"rv|{near}|p1|1", near), "r-bad": b'["rv|zed|p1|1", "zed", '})
    return keys


def test_found_starts_empty_and_takes_no_unknown_field() -> None:
    found = Found()
    assert (found.keys, found.journey_field, found.deferred, found.dead_letters) == (
        {}, None, [], [])
    assert found.all_keys() == []
    assert Found(keys={"a": ["k1", "k2"], "b": ["k3"]}).all_keys() == ["k1", "k2", "k3"]
    with pytest.raises(AttributeError):
        found.journey_fields = "u1"  # type: ignore[attr-defined]  # slots: a typo fails


async def test_find_export_and_erase_take_exactly_the_users_data(client: Redis) -> None:
    p, t = f"ec{uuid.uuid4().hex[:8]}:", f"ec{uuid.uuid4().hex[:8]}t:"
    user, other = "ann", "bob"
    assert bucket(user) != bucket(other)
    keys = await plant(client, p, t, user)
    await plant(client, p, t, other)  # shares ann's phone: its index entry now names bob
    neighbours = await plant_neighbours(client, p, user)
    worker: list[tuple[str, int]] = []

    async def forget_in_worker(who: str, now: int) -> None:
        worker.append((who, now))

    inbox = f"channels: {{inbox: {{type: inbox, key_prefix: '{p}inbox'}}}}\n"
    eraser = Eraser(client, config(p, inbox), t, f"{p}dl", forget_in_worker, KEYS)
    assert (eraser.prefix, eraser.tags_prefix, eraser.dead_letter_stream) == (p, t, f"{p}dl")

    found = await eraser.find(user)
    assert found.keys == {kind: sorted(v) for kind, v in keys.items()}
    assert found.journey_field == user
    assert found.deferred == [f"r1-{user}", f"r2-{user}"]
    assert len(found.dead_letters) == 2

    before = await every_key(client, p) | await every_key(client, t)
    receipt = await eraser.erase(user, now_ms=NOW)
    assert worker == [(user, NOW)]
    assert receipt == {
        "erased_at_ms": NOW, "subject": subject(user), "key_id": mac(K, "scenetrigger hash key "
                                                                       "id")[:8],
        "removed": {**{kind: len(v) for kind, v in keys.items()}, "journey_state": 1,
                    "deferred": 2, "dead_letters": 2},
        "do_not_contact": 2,
        "engine_state": "erase event sent: the worker deletes the table key (changelog "
                        "tombstone)"}
    stored = await client.get(f"{p}erasure:{subject(user)}")
    assert orjson.loads(stored or b"") == receipt

    after = await every_key(client, p) | await every_key(client, t)
    pending = f"{p}deferred:{bucket(user)}"
    dnc = {dnc_name(p, "email", f"{user}@example.com"), dnc_name(p, "phone", "+8613800000001")}
    # Bob's kept do-not-contact hits go too: he shares her phone (consent.do_not_contact).
    # Her deferred set and its tries, emptied, are gone as Redis drops an empty key.
    assert after == (before - {k for v in keys.values() for k in v} - {
        f"{p}dnch:{{{other}}}", pending, f"{pending}:tries"}) | dnc | {f"{p}erasure:{subject(user)}", f"{p}dnc-generation"}
    for name in dnc:
        assert orjson.loads(await client.get(name) or b"") == [NOW, "erasure",
                                                               mac(K, "scenetrigger hash key "
                                                                      "id")[:8]]
    assert set(neighbours) <= after
    assert await client.hkeys(f"{t}journeys") == [other.encode()]
    assert sorted(await client.hkeys(f"{pending}:payload")) == sorted([
        f"r-{same_bucket_as(user)}".encode(), b"r-bad"])
    assert await client.zrange(pending, 0, -1) == []
    assert await client.hkeys(f"{pending}:tries") == []
    left = [letter async for letter in DeadLetterStore(client, f"{p}dl").entries()]
    assert [x.message.user_id for x in left if x.message] == [other]
    assert [(x.source, other.encode() in x.raw) for x in left if not x.message] == [
        ("p.triggers/0/7", True)]

    again = await eraser.erase(user, now_ms=NOW + 1)  # nothing left but the receipt
    assert again["removed"] == {} and again["do_not_contact"] == 0


async def test_export_gives_every_type_as_stored(client: Redis) -> None:
    p, t = f"ex{uuid.uuid4().hex[:8]}:", f"ex{uuid.uuid4().hex[:8]}t:"
    user, u = "cy", "{cy}"
    await client.set(f"{p}user:{u}", b"\xff\xfenot json")  # damaged: no address to match
    await client.hset(f"{p}consent:{u}", mapping={"sms:marketing": "[true,1,\"api\"]"})
    await client.sadd(f"{t}tags:{u}", "vip", "b")
    await client.zadd(f"{t}score:{u}", {"s": 1.5, "a": 1, "z": 3})
    await client.rpush(f"{p}eng:{u}", "1", "2", "3")
    await client.xadd(f"{p}dnch:{u}", {"f": "v"}, id="5-1")
    await client.hset(f"{t}journeys", user, b"state\xff")
    pending = f"{p}deferred:{bucket(user)}"
    good = request(f"rv|{user}|p1|1", user)
    await client.hset(f"{pending}:payload", mapping={"r1": good, "r2": f'["rv|{user}|p2|1" x'})
    await client.xadd(f"{p}dl", {"kind": "record", "source": "s", "message": f"{user} \xe9",
                                 "error": "e"}, id="7-1")
    eraser = Eraser(client, config(p), t, f"{p}dl", keys=KEYS)
    out = await eraser.export(user)
    assert out == {
        "user_id": user,
        "keys": {"directory": {f"{p}user:{u}": "\ufffd\ufffdnot json"},
                 "do_not_contact_hits": {f"{p}dnch:{u}": [{"id": "5-1", "f": "v"}]},
                 "consent": {f"{p}consent:{u}": {"sms:marketing": "[true,1,\"api\"]"}},
                 "engagement": {f"{p}eng:{u}": ["1", "2", "3"]},
                 "tags": {f"{t}tags:{u}": ["b", "vip"]},
                 "score": {f"{t}score:{u}": [["a", 1.0], ["s", 1.5], ["z", 3.0]]}},
        "journeys": {"key": f"{t}journeys", "field": user, "value": "state\ufffd"},
        "deferred": [orjson.loads(good), {"raw": f'["rv|{user}|p2|1" x'}],
        "dead_letters": [{"id": "7-1", "kind": "record", "source": "s",
                          "message": f"{user} \xe9", "error": "e"}]}


async def test_export_of_a_user_with_nothing_is_the_id_alone(client: Redis) -> None:
    p = f"en{uuid.uuid4().hex[:8]}:"
    await client.hset(f"{p}t:journeys", "other", "1")
    assert await Eraser(client, config(p), f"{p}t:", f"{p}dl", keys=KEYS).export("dee") == {
        "user_id": "dee", "keys": {}}


async def test_ids_with_glob_characters_match_only_themselves(client: Redis) -> None:
    p = f"gl{uuid.uuid4().hex[:8]}:"
    users = ["a*", "a?", "a[b]", "a\\b", "ab", "a\\\\b"]
    for user in users:
        for key in (f"{p}cap:{{{user}}}:all:d:1", f"{p}dd:{bucket(user)}:rv|{user}|p|1",
                    f"{p}once:opened:rv|{user}|p|1|sms", f"scenetrigger:inbox:{{{user}}}"):
            await client.set(key, user)
    eraser = Eraser(client, config(p), f"{p}t:", f"{p}dl", keys=KEYS)
    try:
        for user in users:
            found = await eraser.find(user)
            assert {k: len(v) for k, v in found.keys.items()} == {
                "caps": 1, "dedupe": 1, "inbox scenetrigger:inbox": 1, "feedback_markers": 1}
            for key in found.all_keys():
                assert await client.get(key) == user.encode(), (user, key)
    finally:
        await client.delete(*[f"scenetrigger:inbox:{{{u}}}" for u in users])


async def test_each_configured_inbox_prefix_is_searched(client: Redis) -> None:
    p = f"ib{uuid.uuid4().hex[:8]}:"
    inboxes = (f"channels:\n  a: {{type: inbox, key_prefix: '{p}in*a'}}\n"
               f"  b: {{type: inbox, key_prefix: '{p}inb'}}\n"
               f"  c: {{type: inbox, key_prefix: '{p}inb'}}\n")
    for key in (f"{p}in*a:{{u1}}", f"{p}in*a:{{u1}}:m:x", f"{p}inxa:{{u1}}", f"{p}inb:{{u1}}",
                f"{p}inb:{{u1}}:acked", f"{p}inb:{{u1}}x", "scenetrigger:inbox:{u1}"):
        await client.set(key, "1")
    try:
        eraser = Eraser(client, config(p, inboxes), f"{p}t:", f"{p}dl", keys=KEYS)
        assert eraser.inbox_prefixes == [f"{p}in*a", f"{p}inb"]
        assert (await eraser.find("u1")).keys == {
            f"inbox {p}in*a": [f"{p}in*a:{{u1}}", f"{p}in*a:{{u1}}:m:x"],
            f"inbox {p}inb": [f"{p}inb:{{u1}}", f"{p}inb:{{u1}}:acked"]}
    finally:
        await client.delete("scenetrigger:inbox:{u1}")


async def test_the_ads_forget_is_asked_first_and_answers_in_the_receipt(client: Redis) -> None:
    p = f"ad{uuid.uuid4().hex[:8]}:"
    await RedisDirectory(client, p).put(contact_from("u2", {"email": "u2@example.com"}))
    asked: list[tuple[str, Any, int]] = []

    async def forget(user: str, contact: Any, now: int) -> dict[str, Any]:
        asked.append((user, contact, now))
        return {"complete": True, "n": 1}

    eraser = Eraser(client, config(p), f"{p}t:", f"{p}dl", keys=KEYS, forget_in_ads=forget)
    assert eraser.forget_in_ads is forget
    receipt = await eraser.erase("u2", now_ms=9)
    assert [(u, c.email if c else None, n) for u, c, n in asked] == [("u2", "u2@example.com", 9)]
    assert receipt["ad_audiences"] == {"complete": True, "n": 1}
    assert receipt["engine_state"] == "not asked (no broker)"


async def test_with_ad_sinks_the_erasure_asks_them_for_the_reason_erasure(
        client: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    p = f"as{uuid.uuid4().hex[:8]}:"
    secret = f"ERASURE_TEST_SECRET_{uuid.uuid4().hex[:6].upper()}"
    monkeypatch.delenv(secret, raising=False)  # the sink cannot be built: said in the receipt
    ads = ("ads:\n  country_code: '86'\n  sinks:\n    hook:\n      type: webhook\n"
           f"      url: http://127.0.0.1:9/a\n      secret_env: {secret}\n"
           "      audiences: {cart: cart}\n")
    eraser = Eraser(client, config(p, ads), f"{p}t:", f"{p}dl", keys=KEYS)
    receipt = await eraser.erase("u3", now_ms=11)
    assert receipt["ad_audiences"] == {"reason": "erasure", "at_ms": 11, "complete": False,
                                       "error": f"ads sink 'hook': ${secret} is not set"}
    plain = await Eraser(client, config(p), f"{p}t:", f"{p}dl", keys=KEYS).erase("u3", now_ms=12)
    assert "ad_audiences" not in plain


async def test_erased_at_reads_current_previous_and_unkeyed_receipts(client: Redis) -> None:
    p = f"ea{uuid.uuid4().hex[:8]}:"
    old = b"an-older-key"
    keys = HashKeys(K, (old,))
    await client.set(f"{p}erasure:{subject('u1')}", orjson.dumps({"erased_at_ms": 10}))
    await client.set(f"{p}erasure:{subject('u2', old)}", orjson.dumps({"erased_at_ms": 20}))
    await client.set(f"{p}erasure:{sha('erasure' + chr(10) + 'u3')}",
                     orjson.dumps({"erased_at_ms": 30}))
    for n, raw in enumerate((b"{not json", b"{}", b'{"erased_at_ms": null}', b"[1]")):
        await client.set(f"{p}erasure:{subject(f'bad{n}')}", raw)
    users = ["u0", "u1", "u2", "u3", "u4", "bad0", "bad1", "bad2", "bad3"]
    found = await erased_at(client, p, users, keys)
    assert {u: found[u] for u in ("u1", "u2", "u3")} == {"u1": 10, "u2": 20, "u3": 30}
    # An unreadable receipt: erased all the same, after any record's time.
    assert sorted(found) == sorted(["u1", "u2", "u3", "bad0", "bad1", "bad2", "bad3"])
    # A signed 64-bit integer all the same: explain --json prints it (erased_at)
    # for tools that read a millisecond time as one.
    assert all(NOW * 1000 < found[f"bad{n}"] < 2**63 for n in range(4))
    assert await erased_at(client, p, [], keys) == {}
    assert await erased_at(client, p, ["u1"], HashKeys(old)) == {}


async def test_a_cap_counter_of_a_channel_named_with_a_brace_is_erased(client: Redis) -> None:
    """A channel's name may hold "{" (the config takes it): its counters are the
    user's; a longer id's (``u5}:x``) always holds the "}" that closes its tag."""
    p = f"cb{uuid.uuid4().hex[:8]}:"
    own = [f"{p}cap:{{u5}}:all:w:3000", f"{p}cap:{{u5}}:ch:in{{b:d:20000"]
    other = f"{p}cap:{{u5}}:x}}:all:d:20000"
    for key in [*own, other]:
        await client.set(key, "1")
    eraser = Eraser(client, config(p), f"{p}t:", f"{p}dl", keys=KEYS)
    assert (await eraser.find("u5")).keys == {"caps": own}
    assert (await eraser.erase("u5", now_ms=3))["removed"] == {"caps": 2}
    assert await every_key(client, f"{p}cap:") == {other}


async def test_more_messages_than_one_read_takes_are_all_found_once(client: Redis) -> None:
    """The message index and its markers are read 500 at a time: 600 messages
    of the user, each opened (and the first delivered), are each found once."""
    p = f"mm{uuid.uuid4().hex[:8]}:"
    index = RedisMessageIndex(client, p)
    ids = [f"m{n:03d}" for n in range(600)]
    for message_id in ids:
        await index.remember(message_id, MessageMeta("u6", "rv", "inbox"))
        assert await index.first("opened", message_id)
    assert await index.first("delivered", ids[0])
    found = await Eraser(client, config(p), f"{p}t:", f"{p}dl", keys=KEYS).find("u6")
    assert found.keys["message_index"] == [f"{p}msg:{m}" for m in ids]
    assert found.keys["feedback_markers"] == sorted(
        [f"{p}once:opened:{m}" for m in ids] + [f"{p}once:delivered:{ids[0]}"])
