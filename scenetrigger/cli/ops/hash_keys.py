"""``scenetrigger hash-keys status|migrate``: the keyed hashes of do-not-contact
entries and erasure receipts (:mod:`config.hash_keys`, docs/security.md).

``status`` counts the entries by the key that made them: the current key,
each previous one (``$SCENETRIGGER_HASH_KEY_PREVIOUS``), ``unkeyed`` (from
before keyed hashes) or ``other`` (a key this process does not hold: it
cannot match them). ``migrate`` re-keys every unkeyed entry under the
current key (the keyed formula is an HMAC over the unkeyed digest, so no
address or id is needed) and deletes the unkeyed one; entries of a previous
key move when they are next looked up."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

import orjson

from channels.redis_client import DEFAULT_REDIS_URL, redis_url_or_env


def register(sub: Any) -> None:
    parser = sub.add_parser("hash-keys", help="status and migration of the keyed hashes of "
                                              "do-not-contact entries and erasure receipts")
    parser.add_argument("action", choices=["status", "migrate"])
    parser.add_argument("--config", help="config (delivery.redis_prefix)")
    parser.add_argument("--redis-url", help=f"default: $SCENETRIGGER_REDIS_URL or "
                                            f"{DEFAULT_REDIS_URL}")
    parser.add_argument("--dry-run", action="store_true", help="migrate: count, change nothing")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from scenetrigger.cli.ops.users import run_async

    report = run_async(_main(args), args.redis_url)
    if args.json:
        print(orjson.dumps(report).decode())
        return 0
    for kind in ("dnc", "receipts"):
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(report[kind].items())) or "none"
        print(f"{kind}: {counts}")
    if args.action == "migrate":
        verb = "would re-key" if args.dry_run else "re-keyed"
        print(f"{verb} {report['migrated']:,} unkeyed entries under key {report['key_id']}",
              file=sys.stderr)
    return 0


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from channels.redis_client import redis_client
    from config.hash_keys import startup_check
    from config.loader import load_config

    keys = startup_check("hash-keys")
    prefix = load_config(args.config).delivery.redis_prefix
    client = redis_client(redis_url_or_env(args.redis_url))  # one node or a cluster
    try:
        return await HashKeyScan(client, prefix, keys).run(
            migrate=args.action == "migrate" and not args.dry_run)
    finally:
        await client.aclose()


class HashKeyScan:
    def __init__(self, redis: Any, prefix: str, keys: Any) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = keys
        self.names = {keys.key_id: "current", **{k: "previous" for k in keys.previous_ids()}}

    def _label(self, key_id: str | None) -> str:
        from config.hash_keys import LEGACY

        if key_id is None:
            return LEGACY
        return f"{self.names.get(key_id, 'other')} {key_id}"

    async def run(self, migrate: bool) -> dict[str, Any]:
        dnc: Counter[str] = Counter()
        receipts: Counter[str] = Counter()
        migrated = 0
        for kind, counts in (("dnc", dnc), ("erasure", receipts)):
            pattern = f"{self.prefix}{kind}:*".encode()
            async for key in self.redis.scan_iter(match=pattern, count=1000):
                raw = await self.redis.get(key)
                if raw is not None and not _unkeyed(kind, raw) and _key_id(kind, raw) is None:
                    counts["unreadable"] += 1  # damaged: never re-keyed (it may be keyed)
                    continue
                key_id = _key_id(kind, raw)
                counts[self._label(key_id)] += 1
                if key_id is None and migrate:
                    migrated += await self._rekey(kind, key, raw)
        if migrate:  # what is there now
            after = await self.run(migrate=False)
            dnc, receipts = Counter(after["dnc"]), Counter(after["receipts"])
        return {"key_id": self.keys.key_id, "development_key": self.keys.development,
                "dnc": dict(dnc), "receipts": dict(receipts), "migrated": migrated}

    async def _rekey(self, kind: str, key: bytes, raw: bytes | None) -> int:
        if raw is None:
            return 0
        legacy = key.decode().rsplit(":", 1)[1]
        if kind == "dnc":
            name = self.keys.dnc(legacy)
            try:
                ts, source = orjson.loads(raw)[:2]
            except (ValueError, TypeError):
                ts, source = 0, "migrated"
            value = orjson.dumps([ts, source, self.keys.key_id])
        else:
            name = self.keys.subject_of_legacy(legacy)
            receipt = _object(raw)
            receipt.update(subject=name, key_id=self.keys.key_id)
            value = orjson.dumps(receipt)
        # Two slots, two steps: the old name is deleted only once the new one is
        # there (a pipeline would still run the DEL after a refused SET).
        new_key = f"{self.prefix}{kind}:{name}"
        if not await self.redis.set(new_key, value, nx=True) and not await self.redis.exists(
                new_key):
            return 0
        await self.redis.delete(key)
        return 1


def _object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _unkeyed(kind: str, raw: bytes) -> bool:
    """An entry written before keyed hashes, by its value's shape: a DNC entry
    ``[ts, source]``, a receipt without ``key_id``. A value that does not parse is
    neither (its name may already be keyed: re-keying it would lose it)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if kind == "dnc":
        return isinstance(data, list) and len(data) == 2
    return isinstance(data, dict) and "key_id" not in data


def _key_id(kind: str, raw: bytes | None) -> str | None:
    """The key id an entry records; None: unkeyed (written before keyed hashes)."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if kind == "dnc" and isinstance(data, list) and len(data) >= 3:
        return str(data[2])
    if kind == "erasure" and isinstance(data, dict) and "key_id" in data:
        return str(data["key_id"])
    return None
