"""Move Redis data written before the cluster key layout into it
(``scenetrigger migrate``; docs/deploy.md, "Redis").

Before: a user's keys without a hash tag (``st:user:u1``), every pending
delivery in one sorted set ``st:deferred`` (+ ``:payload``, ``:tries``), dedupe
claims ``st:dd:ID``. After: ``st:user:{u1}``, the pending deliveries in the
user's bucket ``st:deferred:{dNN}`` and the claims beside it
``st:dd:{dNN}:ID`` (:mod:`channels.redis_client`). Keys move with DUMP and
RESTORE (their TTL kept), so this also works across slots of a cluster.
A key already in the new layout is left; when both exist the new one wins.
Run it with deliver, serve and journeys stopped; running it again is a no-op.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from channels.policy.decide import DeliveryRequest, claim_key, deferred_key
from channels.policy.store import payload_key, tries_key
from channels.redis_client import lease_bucket, user_tag

Progress = Callable[[Counter[str]], None]
_NEW_CLAIM = re.compile(r"^\{d\d\d\}:")


def _glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _tagged(rest: str) -> bool:
    """A user key's tail in the new layout: ``{id}`` (or ``{id}:…`` for caps)."""
    return rest.startswith("{") and "}" in rest


def claim_user(message_id: str) -> str | None:
    """The user a dedupe claim belongs to: trigger ids ``scene|user|key|ts``,
    handoffs ``handoff|user|ts``, journey sends ``j|strategy|vN|user|…``."""
    parts = message_id.split("|")
    if parts[0] == "j" and len(parts) > 4:
        return parts[3]
    return parts[1] if len(parts) > 2 else None


def _cap_target(base: str, rest: str) -> str | None:
    """``cap:USER:SCOPE:d|w:BUCKET`` (SCOPE ``all`` or ``ch:CHANNEL``) tagged."""
    parts = rest.split(":")
    if len(parts) < 4 or parts[-2] not in ("d", "w"):
        return None
    tail = 4 if len(parts) >= 5 and parts[-4] == "ch" else 3
    user = ":".join(parts[:-tail])
    return f"{base}{user_tag(user)}:{':'.join(parts[-tail:])}" if user else None


class Migration:
    """Over a client with ``decode_responses=False`` (DUMP is binary)."""

    def __init__(self, redis: Any, prefix: str, tags_prefix: str, *, dry_run: bool = False,
                 progress: Progress | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.tags_prefix = tags_prefix
        self.dry_run = dry_run
        self.progress = progress
        self.moved: Counter[str] = Counter()
        self.left: Counter[str] = Counter()

    async def run(self) -> dict[str, Any]:
        p, t = self.prefix, self.tags_prefix
        for kind, base in (("directory", f"{p}user:"), ("consent", f"{p}consent:"),
                           ("engagement", f"{p}eng:"), ("tags", f"{t}tags:"),
                           ("score", f"{t}score:")):
            await self._keys(kind, base, lambda base, rest: base + user_tag(rest))
        await self._keys("caps", f"{p}cap:", _cap_target)
        await self._keys("dedupe", f"{p}dd:", self._claim_target)
        await self._pending()
        return {"dry_run": self.dry_run, "moved": dict(self.moved), "left": dict(self.left),
                "total_moved": sum(self.moved.values())}

    def _claim_target(self, base: str, rest: str) -> str | None:
        if _NEW_CLAIM.match(rest):
            return ""  # already beside its bucket
        user = claim_user(rest)
        return claim_key(self.prefix, rest, user) if user else None

    async def _keys(self, kind: str, base: str,
                    target: Callable[[str, str], str | None]) -> None:
        async for raw in self.redis.scan_iter(match=_glob(base) + "*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            rest = key[len(base):]
            if kind != "dedupe" and _tagged(rest):
                continue
            new = target(base, rest)
            if new == "":
                continue
            if new is None:
                self.left[kind] += 1  # not understood: left as it is (counted)
                continue
            if await self._move(key, new):
                self.moved[kind] += 1
            else:
                self.left[f"{kind}_newer_exists"] += 1
            if self.progress is not None and sum(self.moved.values()) % 10_000 == 0:
                self.progress(self.moved)

    async def _move(self, old: str, new: str) -> bool:
        if self.dry_run:
            return True
        dumped = await self.redis.dump(old)
        if dumped is None:  # gone meanwhile
            return True
        ttl = int(await self.redis.pttl(old))
        try:
            await self.redis.restore(new, max(ttl, 0), dumped)
        except ResponseError as exc:
            if "BUSYKEY" not in str(exc):
                raise
            await self.redis.delete(old)  # the new layout's key is newer: it wins
            return False
        await self.redis.delete(old)
        return True

    async def _pending(self) -> None:
        """The one old sorted set of deferred and leased requests into the buckets."""
        old = deferred_key(self.prefix, 0).rsplit(":", 1)[0]  # "{p}deferred"
        rows = await self.redis.zrange(old, 0, -1, withscores=True)
        if not rows:
            return
        payloads = await self.redis.hgetall(payload_key(old))
        tries = await self.redis.hgetall(tries_key(old))
        for item, score in rows:
            payload = payloads.get(item)
            if payload is None:
                self.left["pending_without_payload"] += 1  # dropped, as its release would
                continue
            bucket = deferred_key(self.prefix, lease_bucket(DeliveryRequest.decode(payload).user_id))
            self.moved["pending"] += 1
            if self.dry_run:
                continue
            pipe = self.redis.pipeline(transaction=True)  # one bucket: one slot
            pipe.zadd(bucket, {item: score})
            pipe.hset(payload_key(bucket), item, payload)
            if item in tries:
                pipe.hset(tries_key(bucket), item, tries[item])
            await pipe.execute()
        if not self.dry_run:
            for key in (old, payload_key(old), tries_key(old)):
                await self.redis.delete(key)
