"""The consent stores (channels.audience.consent) byte by byte: the Redis
store's keys and values as docs/audiences.md and the module's docstring give
them (``{prefix}consent:{user}`` field ``{channel}:{purpose}`` = ``[granted,
ts, source]``; ``{prefix}dnc:{HMAC-SHA256(key, "dnc\\n" + hash)}`` = ``[ts,
source, key id]``), computed here with hmac/hashlib, on an in-memory stand-in
for the Redis client (its real behaviour is tested in tests/config/test_hash_keys.py
against a redis-server); and the memory store the dry runs use."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import orjson
import pytest

from channels.audience.consent import (
    DO_NOT_CONTACT,
    NO_ADDRESS,
    NO_CONSENT,
    PURPOSES,
    REACH_REASONS,
    UNSUBSCRIBED,
    ConsentRecord,
    MemoryConsentStore,
    RedisConsentStore,
    decode_consents,
    unsubscribe_signature,
    unsubscribe_url,
)
from config.hash_keys import HashKeys

KEY, OLD = b"current-hash-key", b"previous-hash-key"


def mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def dnc_name(key: bytes, inner: str) -> str:
    return mac(key, "dnc\n" + inner)


def key_id(key: bytes) -> str:
    return mac(key, "scenetrigger hash key id")[:8]


class Pipe:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def set(self, *args: Any, **kw: Any) -> None:
        self.ops.append(("set", args, kw))

    def delete(self, *args: Any) -> None:
        self.ops.append(("delete", args, {}))

    async def execute(self) -> list[Any]:
        out = [await getattr(self.redis, op)(*args, **kw) for op, args, kw in self.ops]
        self.ops = []
        return out


class FakeRedis:
    """The few commands the store uses, answering bytes (decode_responses off)."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.transactions: list[bool] = []

    @staticmethod
    def _bytes(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    async def hset(self, key: str, name: str, value: Any) -> int:
        self.hashes.setdefault(key, {})[name.encode()] = self._bytes(value)
        return 1

    async def set(self, key: str, value: Any, nx: bool = False) -> bool:
        if nx and key in self.strings:
            return False
        self.strings[key] = self._bytes(value)
        return True

    async def delete(self, *keys: str) -> int:
        gone = 0
        for key in keys:
            gone += (self.strings.pop(key, None) is not None) + (
                self.hashes.pop(key, None) is not None)
        return gone

    async def incr(self, key: str) -> int:
        value = int(self.strings.get(key, b"0")) + 1
        self.strings[key] = str(value).encode()
        return value

    async def mget(self, keys: Iterable[str]) -> list[bytes | None]:
        return [self.strings.get(k) for k in keys]

    def pipeline(self, transaction: bool = True) -> Pipe:
        self.transactions.append(transaction)
        return Pipe(self)


def test_the_reasons_and_purposes() -> None:
    assert REACH_REASONS == ("no_address", "do_not_contact", "unsubscribed", "no_consent")
    assert (NO_ADDRESS, DO_NOT_CONTACT, UNSUBSCRIBED, NO_CONSENT) == REACH_REASONS
    assert PURPOSES == ("marketing", "transactional")


def test_a_record_as_a_dict_and_frozen() -> None:
    record = ConsentRecord(False, 7, "api")
    assert record.to_dict() == {"granted": False, "ts": 7, "source": "api"}
    with pytest.raises(AttributeError):
        record.ts = 8  # type: ignore[misc]


async def test_the_redis_record_is_the_documented_key_field_and_value() -> None:
    redis = FakeRedis()
    store = RedisConsentStore(redis, "p:", HashKeys(KEY))
    await store.set("ann", "sms", "marketing", ConsentRecord(False, 1_700, "sms_reply"))
    await store.set("ann", "email", "transactional", ConsentRecord(True, 1_800, "api"))
    assert redis.hashes == {"p:consent:{ann}": {
        b"sms:marketing": b'[false,1700,"sms_reply"]',
        b"email:transactional": b'[true,1800,"api"]'}}
    assert await store.all("ann") == {
        "sms:marketing": ConsentRecord(False, 1_700, "sms_reply"),
        "email:transactional": ConsentRecord(True, 1_800, "api")}
    assert await store.all("bob") == {}
    assert await store.forget("ann") is True
    assert redis.hashes == {}
    assert await store.forget("ann") is False


def test_the_default_prefix_and_keys_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENETRIGGER_HASH_KEY", "from-the-env")
    store = RedisConsentStore(FakeRedis())
    assert store.key("ann") == "st:consent:{ann}"
    assert store.dnc_key("abc") == "st:dnc:abc"
    assert store.keys.current == b"from-the-env"
    assert RedisConsentStore(FakeRedis(), keys=HashKeys(KEY)).keys.current == KEY


def test_decoding_either_client_setting() -> None:
    raw_bytes = {b"email:marketing": b'[0,5,"import"]'}
    raw_text = {"email:marketing": '[1,6,"api"]'}
    assert decode_consents(raw_bytes) == {"email:marketing": ConsentRecord(False, 5, "import")}
    assert decode_consents(raw_text) == {"email:marketing": ConsentRecord(True, 6, "api")}
    (record,) = decode_consents({b"sms:marketing": b'[1,"9",7]'}).values()
    assert (record.granted, record.ts, record.source) == (True, 9, "7")
    assert type(record.granted) is bool and type(record.ts) is int and type(record.source) is str


async def test_do_not_contact_entries_generation_and_owners_hits() -> None:
    redis = FakeRedis()
    prefix = "p:"
    store = RedisConsentStore(redis, prefix, HashKeys(KEY, (OLD,)))
    # ann owns h1 by email, bob h2 by phone; carol's kept hits must stay.
    redis.strings.update({f"{prefix}addr:email:h1": b"ann", f"{prefix}addr:phone:h2": b"bob",
                          f"{prefix}dnch:{{ann}}": b"x", f"{prefix}dnch:{{bob}}": b"x",
                          f"{prefix}dnch:{{carol}}": b"x"})
    await store.do_not_contact(["h1", "h2"], 1_000, "erasure")
    for inner in ("h1", "h2"):
        assert redis.strings[f"{prefix}dnc:{dnc_name(KEY, inner)}"] == orjson.dumps(
            [1_000, "erasure", key_id(KEY)])
    assert redis.strings[f"{prefix}dnc-generation"] == b"1"
    assert f"{prefix}dnch:{{ann}}" not in redis.strings
    assert f"{prefix}dnch:{{bob}}" not in redis.strings
    assert redis.strings[f"{prefix}dnch:{{carol}}"] == b"x"
    assert set(redis.transactions) == {False}  # cluster: no MULTI across slots
    # A second listing keeps the first entry (NX) and raises the generation.
    await store.do_not_contact(["h1"], 2_000, "sms_reply")
    assert redis.strings[f"{prefix}dnc:{dnc_name(KEY, 'h1')}"] == orjson.dumps(
        [1_000, "erasure", key_id(KEY)])
    assert redis.strings[f"{prefix}dnc-generation"] == b"2"


async def test_an_owner_read_as_text_is_cleared_too() -> None:
    redis = FakeRedis()
    store = RedisConsentStore(redis, "p:", HashKeys(KEY))
    redis.strings["p:dnch:{dan}"] = b"x"

    async def mget(keys: Iterable[str]) -> list[Any]:
        return ["dan" if k == "p:addr:openid:h9" else None for k in keys]

    redis.mget = mget  # type: ignore[method-assign]
    await store.do_not_contact(["h9"], 1, "import")
    assert "p:dnch:{dan}" not in redis.strings


async def test_no_owner_deletes_no_hits() -> None:
    redis = FakeRedis()
    store = RedisConsentStore(redis, "p:", HashKeys(KEY))
    redis.strings["p:dnch:{ann}"] = b"x"
    await store.do_not_contact(["h1"], 1, "import")
    assert redis.strings["p:dnch:{ann}"] == b"x"
    assert len(redis.transactions) == 1  # only the entries' pipeline


async def test_blocked_finds_every_form_and_moves_old_ones_under_the_current_key() -> None:
    redis = FakeRedis()
    prefix = "p:"
    store = RedisConsentStore(redis, prefix, HashKeys(KEY, (OLD,)))
    current = f"{prefix}dnc:{dnc_name(KEY, 'now')}"
    previous = f"{prefix}dnc:{dnc_name(OLD, 'old')}"
    unkeyed = f"{prefix}dnc:plain"
    damaged = f"{prefix}dnc:{dnc_name(OLD, 'bad')}"
    redis.strings.update({current: orjson.dumps([1, "import", key_id(KEY)]),
                          previous: orjson.dumps([2, "erasure", key_id(OLD)]),
                          unkeyed: orjson.dumps([3, "sms_reply"]),
                          damaged: b"{not json"})
    assert await store.blocked([]) == []
    assert await store.blocked(["nobody", "now", "old", "plain", "bad", "nobody2"]) == [
        False, True, True, True, True, False]
    assert redis.strings == {
        current: orjson.dumps([1, "import", key_id(KEY)]),
        f"{prefix}dnc:{dnc_name(KEY, 'old')}": orjson.dumps([2, "erasure", key_id(KEY)]),
        f"{prefix}dnc:{dnc_name(KEY, 'plain')}": orjson.dumps([3, "sms_reply", key_id(KEY)]),
        f"{prefix}dnc:{dnc_name(KEY, 'bad')}": orjson.dumps([0, "migrated", key_id(KEY)])}
    assert set(redis.transactions) == {False}  # the moves too: no MULTI across slots
    # Moved: now found under the current key, nothing left to move.
    assert await store.blocked(["old", "plain", "bad"]) == [True, True, True]
    assert await store.blocked(["old"]) == [True]  # one hash: one group of forms
    assert await store.blocked(["nobody"]) == [False]


async def test_a_move_never_overwrites_an_entry_under_the_current_key() -> None:
    redis = FakeRedis()
    store = RedisConsentStore(redis, "p:", HashKeys(KEY, (OLD,)))
    old_name = f"p:dnc:{dnc_name(OLD, 'x')}"
    redis.strings[old_name] = orjson.dumps([5, "import"])
    await store._move([(dnc_name(KEY, "x"), dnc_name(OLD, "x"), orjson.dumps([9, "api"]))])
    assert redis.strings == {f"p:dnc:{dnc_name(KEY, 'x')}": orjson.dumps([9, "api", key_id(KEY)])}
    redis.strings[old_name] = orjson.dumps([6, "import"])
    await store._move([(dnc_name(KEY, "x"), dnc_name(OLD, "x"), orjson.dumps([6, "import"]))])
    assert redis.strings == {f"p:dnc:{dnc_name(KEY, 'x')}": orjson.dumps([9, "api", key_id(KEY)])}
    # A value that is JSON but no list: a damaged entry, still blocking.
    await store._move([(dnc_name(KEY, "y"), "gone", orjson.dumps(None))])
    assert redis.strings[f"p:dnc:{dnc_name(KEY, 'y')}"] == orjson.dumps(
        [0, "migrated", key_id(KEY)])


async def test_the_memory_store() -> None:
    store = MemoryConsentStore()
    record = ConsentRecord(True, 3, "api")
    await store.set("ann", "email", "marketing", record)
    held = await store.all("ann")
    assert held == {"email:marketing": record}
    held.clear()  # a copy: the store keeps its own
    assert await store.all("ann") == {"email:marketing": record}
    assert await store.all("bob") == {}
    await store.do_not_contact(iter(["h1", "h2"]), 10, "erasure")
    await store.do_not_contact(["h1"], 20, "import")
    assert store.dnc == {"h1": (10, "erasure"), "h2": (10, "erasure")}
    assert await store.blocked(["h2", "h3", "h1"]) == [True, False, True]
    assert await store.forget("ann") is True
    assert await store.forget("ann") is False
    assert await store.all("ann") == {}


def test_the_link_quotes_user_and_channel_and_signs_the_raw_ids() -> None:
    secret = b"s3cret"
    user, channel = "a b&c/é", "e/mail"
    sig = mac(secret, f"unsubscribe\n{user}\n{channel}")[:32]
    assert unsubscribe_signature(secret, user, channel) == sig
    assert unsubscribe_url("https://t.example//", secret, user, channel) == (
        "https://t.example/unsubscribe/e%2Fmail?u=a%20b%26c%2F%C3%A9&s=" + sig)
    # Only slashes are trimmed from the base (a path may end in any letter).
    assert unsubscribe_url("https://t.example/AX/", secret, "u", "sms").startswith(
        "https://t.example/AX/unsubscribe/sms?u=u&s=")
