"""Per-user tags and scores where operators and other services can read them.

One async Protocol, two stores: :class:`MemoryTagStore` (tests, embedded
runs) and :class:`RedisTagStore` (a Redis set per user, ``<prefix>tags:<user>``,
and a hash ``<prefix>score:<user>`` with the lead score's value, time and
armed flag, written through by the host after each score change).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from channels.redis_client import user_tag
from strategies.scoring import LeadScore
from strategies.tags import replace_derived

DEFAULT_PREFIX = "scenetrigger:"


class TagStore(Protocol):
    async def tags(self, user_id: str) -> frozenset[str]: ...

    async def add(self, user_id: str, tags: Iterable[str]) -> None: ...

    async def remove(self, user_id: str, tags: Iterable[str]) -> None: ...

    async def set_derived(self, user_id: str, derived: Iterable[str]) -> None: ...

    async def score(self, user_id: str) -> LeadScore | None: ...

    async def put_score(self, user_id: str, score: LeadScore) -> None: ...


class MemoryTagStore:
    def __init__(self) -> None:
        self._tags: dict[str, frozenset[str]] = {}
        self._scores: dict[str, LeadScore] = {}

    async def tags(self, user_id: str) -> frozenset[str]:
        return self._tags.get(user_id, frozenset())

    async def add(self, user_id: str, tags: Iterable[str]) -> None:
        self._tags[user_id] = self._tags.get(user_id, frozenset()) | frozenset(tags)

    async def remove(self, user_id: str, tags: Iterable[str]) -> None:
        self._tags[user_id] = self._tags.get(user_id, frozenset()) - frozenset(tags)

    async def set_derived(self, user_id: str, derived: Iterable[str]) -> None:
        add, remove = replace_derived(self._tags.get(user_id, frozenset()), derived)
        self._tags[user_id] = (self._tags.get(user_id, frozenset()) - remove) | add

    async def score(self, user_id: str) -> LeadScore | None:
        return self._scores.get(user_id)

    async def put_score(self, user_id: str, score: LeadScore) -> None:
        self._scores[user_id] = score


class RedisTagStore:
    """Over a ``redis.asyncio.Redis`` client (``decode_responses`` either way)."""

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = client
        self._prefix = prefix

    def tags_key(self, user_id: str) -> str:
        return f"{self._prefix}tags:{user_tag(user_id)}"

    def score_key(self, user_id: str) -> str:
        return f"{self._prefix}score:{user_tag(user_id)}"

    async def tags(self, user_id: str) -> frozenset[str]:
        members = await self._redis.smembers(self.tags_key(user_id))
        return frozenset(_text(m) for m in members)

    async def add(self, user_id: str, tags: Iterable[str]) -> None:
        items = list(tags)
        if items:
            await self._redis.sadd(self.tags_key(user_id), *items)

    async def remove(self, user_id: str, tags: Iterable[str]) -> None:
        items = list(tags)
        if items:
            await self._redis.srem(self.tags_key(user_id), *items)

    async def set_derived(self, user_id: str, derived: Iterable[str]) -> None:
        add, remove = replace_derived(await self.tags(user_id), derived)
        if not add and not remove:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            if remove:
                pipe.srem(self.tags_key(user_id), *remove)
            if add:
                pipe.sadd(self.tags_key(user_id), *add)
            await pipe.execute()

    async def score(self, user_id: str) -> LeadScore | None:
        raw = await self._redis.hgetall(self.score_key(user_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return LeadScore(float(fields["value"]), int(fields["at_ms"]), fields["armed"] == "1")

    async def put_score(self, user_id: str, score: LeadScore) -> None:
        await self._redis.hset(self.score_key(user_id), mapping={
            "value": repr(score.value), "at_ms": str(score.at_ms),
            "armed": "1" if score.armed else "0"})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
