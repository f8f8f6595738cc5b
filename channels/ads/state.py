"""What the sync has put where: per user, each (sink, audience) the user was
added to and when, so an exit, an ads unsubscribe or an erasure can take the
user out of every synced audience; counters for ``audiences status``; the
receipts of removals.

Redis (``delivery.redis_prefix``): ``{p}ads:{{user}}`` (HASH, field
``sink|audience`` -> ms; field ``_user`` -> the id, for export),
``{p}ads-status`` (HASH of counters), ``{p}ads-receipt:{subject}`` (the
keyed hash of the user id, as erasure receipts are named) and
``{p}ads-pending`` (LIST: removals an erasure or unsubscribe could not send,
hashed as each platform wants them; the next ``audiences sync`` sends them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import orjson

from channels.redis_client import user_tag

_USER = "_user"


def entry(sink: str, audience: str) -> str:
    return f"{sink}|{audience}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SyncState(Protocol):
    async def synced(self, user_id: str) -> dict[str, int]:
        """``sink|audience`` -> when the user was added, ms."""
        ...

    async def mark(self, user_id: str, sink: str, audience: str, ts_ms: int) -> None: ...

    async def unmark(self, user_id: str, sink: str, audience: str) -> None: ...

    async def forget(self, user_id: str) -> None: ...

    async def count(self, counts: Mapping[str, int]) -> None: ...

    async def status(self) -> dict[str, int]: ...

    def entries(self) -> AsyncIterator[tuple[str, str, int]]:
        """(user_id, ``sink|audience``, ms) of every synced membership."""
        ...

    async def put_receipt(self, subject: str, receipt: Mapping[str, Any]) -> None: ...

    async def put_pending(self, removals: list[dict[str, Any]]) -> None:
        """Removals that could not be sent (hashed: ``sink``, ``audience`` = the
        platform's id, ``user_id``, ``email``, ``phone``), for the next sync."""
        ...

    async def take_pending(self) -> list[dict[str, Any]]: ...


class MemorySyncState:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, int]] = {}
        self.counters: dict[str, int] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        self.pending: list[dict[str, Any]] = []

    async def synced(self, user_id: str) -> dict[str, int]:
        return dict(self.users.get(user_id, {}))

    async def mark(self, user_id: str, sink: str, audience: str, ts_ms: int) -> None:
        self.users.setdefault(user_id, {})[entry(sink, audience)] = ts_ms

    async def unmark(self, user_id: str, sink: str, audience: str) -> None:
        found = self.users.get(user_id, {})
        found.pop(entry(sink, audience), None)
        if not found:
            self.users.pop(user_id, None)

    async def forget(self, user_id: str) -> None:
        self.users.pop(user_id, None)

    async def count(self, counts: Mapping[str, int]) -> None:
        for name, n in counts.items():
            self.counters[name] = self.counters.get(name, 0) + n

    async def status(self) -> dict[str, int]:
        return dict(self.counters)

    async def entries(self) -> AsyncIterator[tuple[str, str, int]]:
        for user, found in sorted(self.users.items()):
            for name, ts in sorted(found.items()):
                yield user, name, ts

    async def put_receipt(self, subject: str, receipt: Mapping[str, Any]) -> None:
        self.receipts[subject] = dict(receipt)

    async def put_pending(self, removals: list[dict[str, Any]]) -> None:
        self.pending.extend(removals)

    async def take_pending(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out


class RedisSyncState:
    def __init__(self, redis: Any, prefix: str = "st:") -> None:
        self._redis = redis
        self._prefix = prefix

    def key(self, user_id: str) -> str:
        return f"{self._prefix}ads:{user_tag(user_id)}"

    async def synced(self, user_id: str) -> dict[str, int]:
        raw = await self._redis.hgetall(self.key(user_id))
        return {_text(k): int(v) for k, v in raw.items() if _text(k) != _USER}

    async def mark(self, user_id: str, sink: str, audience: str, ts_ms: int) -> None:
        await self._redis.hset(self.key(user_id),
                               mapping={entry(sink, audience): ts_ms, _USER: user_id})

    async def unmark(self, user_id: str, sink: str, audience: str) -> None:
        key = self.key(user_id)
        await self._redis.hdel(key, entry(sink, audience))
        if await self._redis.hlen(key) <= 1:  # only the id is left
            await self._redis.delete(key)

    async def forget(self, user_id: str) -> None:
        await self._redis.delete(self.key(user_id))

    async def count(self, counts: Mapping[str, int]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrby(f"{self._prefix}ads-status", name, n)
        await pipe.execute()

    async def status(self) -> dict[str, int]:
        raw = await self._redis.hgetall(f"{self._prefix}ads-status")
        return {_text(k): int(v) for k, v in sorted(raw.items())}

    async def entries(self) -> AsyncIterator[tuple[str, str, int]]:
        keys = sorted({_text(k) async for k in self._redis.scan_iter(
            match=f"{self._prefix}ads:{{*", count=1000)})
        for key in keys:
            raw = {_text(k): _text(v) for k, v in (await self._redis.hgetall(key)).items()}
            user = raw.pop(_USER, None)
            if user is None:
                continue
            for name, ts in sorted(raw.items()):
                yield user, name, int(ts)

    async def put_receipt(self, subject: str, receipt: Mapping[str, Any]) -> None:
        await self._redis.set(f"{self._prefix}ads-receipt:{subject}", orjson.dumps(receipt))

    async def put_pending(self, removals: list[dict[str, Any]]) -> None:
        if removals:
            await self._redis.rpush(f"{self._prefix}ads-pending",
                                    *(orjson.dumps(r) for r in removals))

    async def take_pending(self) -> list[dict[str, Any]]:
        # One transaction: a removal is taken by one sync, never by two or none.
        pipe = self._redis.pipeline(transaction=True)
        pipe.lrange(f"{self._prefix}ads-pending", 0, -1)
        pipe.delete(f"{self._prefix}ads-pending")
        raw, _ = await pipe.execute()
        return [orjson.loads(item) for item in raw]
