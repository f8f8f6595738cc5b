"""Keyed hashes (issue 19: the do-not-contact list was unsalted SHA-256, an
erased user's phone came back from `st:dnc:*` by brute force; the erasure
receipt was sha256("erasure\\n" + id)). Every expected name is computed here
with hmac/hashlib from the formula in docs/security.md, never through the
project's functions. Real Redis for the stores and the commands."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from channels.audience.consent import RedisConsentStore
from channels.audience.directory import RedisDirectory, contact_from
from channels.erasure_receipts import erased_at
from config.hash_keys import (
    HASH_KEY_ENV,
    HASH_KEY_PREVIOUS_ENV,
    REQUIRE_HASH_KEY_ENV,
    HashKeyMissing,
    HashKeys,
    startup_check,
)
from config.loader import load_config_text
from scenetrigger.cli.main import main
from scenetrigger.ops.erasure import Eraser

K1, K2 = "first-secret-key", "second-secret-key"
SCENES = "scenes: {promo: {kind: arrival, when: {page: {prefix: /promo}}}}\n"
EMAIL, PHONE = "Ann@Example.com", "+86 138 0000 0001"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def mac(key: str, text: str) -> str:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest()


def unkeyed_dnc(kind: str, normal: str) -> str:
    return sha(f"{kind}\n{normal}")


def keyed_dnc(key: str, kind: str, normal: str) -> str:
    return mac(key, "dnc\n" + unkeyed_dnc(kind, normal))


def keyed_subject(key: str, user: str) -> str:
    return mac(key, "erasure\n" + sha(f"erasure\n{user}"))


def key_id(key: str) -> str:
    return mac(key, "scenetrigger hash key id")[:8]


def test_the_names_follow_the_documented_formula() -> None:
    keys = HashKeys.from_env({HASH_KEY_ENV: K1, HASH_KEY_PREVIOUS_ENV: f" {K2} ,"})
    inner = unkeyed_dnc("email", "ann@example.com")
    assert keys.dnc(inner) == keyed_dnc(K1, "email", "ann@example.com")
    assert keys.dnc_candidates(inner) == [keyed_dnc(K1, "email", "ann@example.com"),
                                          keyed_dnc(K2, "email", "ann@example.com"), inner]
    assert keys.subject("ann") == keyed_subject(K1, "ann")
    assert keys.key_id == key_id(K1) and keys.previous_ids() == [key_id(K2)]
    assert not keys.development


def test_unset_warns_and_uses_the_development_key(capsys: pytest.CaptureFixture[str]) -> None:
    keys = startup_check("erase", {})
    assert keys.development
    assert keys.subject("ann") == keyed_subject("scenetrigger-development-hash-key-not-secret",
                                                "ann")
    assert f"WARNING {HASH_KEY_ENV} is not set" in capsys.readouterr().err
    with pytest.raises(HashKeyMissing, match=REQUIRE_HASH_KEY_ENV):
        startup_check("erase", {REQUIRE_HASH_KEY_ENV: "1"})
    assert not startup_check("erase", {REQUIRE_HASH_KEY_ENV: "1", HASH_KEY_ENV: K1}).development


def test_erase_refuses_to_start_without_a_key_when_one_is_required(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    monkeypatch.setenv(REQUIRE_HASH_KEY_ENV, "1")
    # refused before any connection: the Redis URL points nowhere
    assert main(["erase", "ann", "--redis-url", "redis://127.0.0.1:9/0"]) == 1
    assert f"{HASH_KEY_ENV} is not set" in capsys.readouterr().err


@pytest.mark.integration
async def test_erasure_writes_keyed_names_and_no_unkeyed_one(redis_url: str) -> None:
    prefix = f"hk{uuid.uuid4().hex[:8]}:"
    config = load_config_text(SCENES + f'delivery: {{redis_prefix: "{prefix}"}}\n')
    client = Redis.from_url(redis_url)
    try:
        await RedisDirectory(client, prefix).put(contact_from("ann", {"email": EMAIL,
                                                                      "phone": PHONE}))
        keys = HashKeys(K1.encode())
        receipt = await Eraser(client, config, keys=keys).erase("ann", now_ms=5)
        dnc = sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}dnc:*")])
        assert dnc == sorted(f"{prefix}dnc:{keyed_dnc(K1, kind, normal)}" for kind, normal in
                             (("email", "ann@example.com"), ("phone", "+8613800000001")))
        for name in dnc:
            assert orjson.loads(await client.get(name) or b"")[2] == key_id(K1)
        name = f"{prefix}erasure:{keyed_subject(K1, 'ann')}"
        assert orjson.loads(await client.get(name) or b"")["key_id"] == key_id(K1)
        assert receipt["subject"] == keyed_subject(K1, "ann")
        assert await client.exists(f"{prefix}dnc:{unkeyed_dnc('phone', '+8613800000001')}",
                                   f"{prefix}erasure:{sha('erasure' + chr(10) + 'ann')}") == 0
        assert await erased_at(client, prefix, ["ann", "bob"], keys) == {"ann": 5}
        assert await erased_at(client, prefix, ["ann"], HashKeys(K2.encode())) == {}
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_unkeyed_and_previous_key_entries_block_and_move_on_read(redis_url: str) -> None:
    prefix = f"hk{uuid.uuid4().hex[:8]}:"
    client = Redis.from_url(redis_url)
    inner = [unkeyed_dnc("email", f"{n}@example.com") for n in ("old", "k1", "none")]
    try:
        await client.set(f"{prefix}dnc:{inner[0]}", orjson.dumps([7, "erasure"]))  # unkeyed
        await RedisConsentStore(client, prefix, HashKeys(K1.encode())).do_not_contact(
            [inner[1]], 8, "sms_reply")
        rotated = RedisConsentStore(client, prefix, HashKeys(K2.encode(), (K1.encode(),)))
        assert await rotated.blocked(inner) == [True, True, False]
        for n in (0, 1):  # both now under the current key, the old forms gone
            assert await client.exists(f"{prefix}dnc:{mac(K2, 'dnc' + chr(10) + inner[n])}")
        assert await client.exists(f"{prefix}dnc:{inner[0]}",
                                   f"{prefix}dnc:{mac(K1, 'dnc' + chr(10) + inner[1])}") == 0
        moved = await client.get(f"{prefix}dnc:{mac(K2, 'dnc' + chr(10) + inner[1])}")
        assert orjson.loads(moved or b"") == [8, "sms_reply", key_id(K2)]
        forgetful = RedisConsentStore(client, prefix, HashKeys(b"a-third-key"))
        assert await forgetful.blocked(inner) == [False, False, False]  # why keys must agree
    finally:
        await client.aclose()


@pytest.mark.integration
def test_hash_keys_migrate_rekeys_every_unkeyed_entry(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"hk{uuid.uuid4().hex[:8]}:"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(SCENES + f'delivery: {{redis_prefix: "{prefix}"}}\n')
    legacy_dnc = unkeyed_dnc("phone", "+8613800000001")
    legacy_receipt = sha("erasure\nann")
    # An entry already under the current key whose value is damaged: its name is
    # already keyed, so re-keying it would move it where no lookup looks.
    damaged = f"{prefix}dnc:{mac(K1, 'dnc' + chr(10) + unkeyed_dnc('phone', '+8613800000002'))}"

    async def plant() -> None:
        client = Redis.from_url(redis_url)
        await client.set(damaged, b'[123,"erasure"')
        await client.set(f"{prefix}dnc:{legacy_dnc}", orjson.dumps([3, "erasure"]))
        await client.set(f"{prefix}erasure:{legacy_receipt}", orjson.dumps(
            {"erased_at_ms": 3, "subject": legacy_receipt, "removed": {}}))
        await client.aclose()

    async def read(*names: str) -> list[Any]:
        client = Redis.from_url(redis_url)
        try:
            return list(await client.mget(list(names)))
        finally:
            await client.aclose()

    asyncio.run(plant())
    monkeypatch.setenv(HASH_KEY_ENV, K1)
    common = ["--config", str(cfg), "--redis-url", redis_url, "--json"]
    assert main(["hash-keys", "status", *common]) == 0
    status = orjson.loads(capsys.readouterr().out)
    assert (status["dnc"], status["receipts"]) == ({"unkeyed": 1, "unreadable": 1},
                                                   {"unkeyed": 1})
    assert main(["hash-keys", "migrate", *common]) == 0
    done = orjson.loads(capsys.readouterr().out)
    current = f"current {key_id(K1)}"
    assert done["migrated"] == 2
    assert (done["dnc"], done["receipts"]) == ({current: 1, "unreadable": 1}, {current: 1})
    assert asyncio.run(read(damaged)) == [b'[123,"erasure"']  # left where it is
    new_dnc = f"{prefix}dnc:{mac(K1, 'dnc' + chr(10) + legacy_dnc)}"
    new_receipt = f"{prefix}erasure:{keyed_subject(K1, 'ann')}"
    old = asyncio.run(read(f"{prefix}dnc:{legacy_dnc}", f"{prefix}erasure:{legacy_receipt}"))
    assert old == [None, None]
    dnc_value, receipt_value = asyncio.run(read(new_dnc, new_receipt))
    assert orjson.loads(dnc_value or b"") == [3, "erasure", key_id(K1)]
    assert orjson.loads(receipt_value or b"")["erased_at_ms"] == 3
