"""Where the delivery policy keeps its state: claims (dedupe leases), cap
counters, engagement, and the pending set of deferrals and leases.
:class:`RedisPolicyStore` for every process that shares delivery,
:class:`MemoryPolicyStore` (same behaviour, expiry by the ``now_ms`` passed
in) for dry runs, the demo and unit tests. :class:`channels.policy.decide.DeliveryPolicy`
decides; these only count and remember."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Sequence
from typing import Any, Protocol

_DAY_MS = 86_400_000
_ENGAGEMENT_TTL_MS = 90 * _DAY_MS


class PolicyStore(Protocol):
    """Where the policy keeps its counters; Redis and memory implement it."""

    async def claim(self, key: str, ttl_ms: int, now_ms: int) -> bool: ...

    async def unclaim(self, key: str) -> None:
        """Undo a claim whose decision failed part-way, so a retry is not a duplicate."""
        ...

    async def reserve(self, counters: Sequence[tuple[str, int, int]], now_ms: int) -> int:
        """Atomically: if every ``(key, limit, ttl_ms)`` is below its limit,
        increment all and return -1; else return the index of the first full one."""
        ...

    async def engagement(self, key: str) -> tuple[int, int | None]: ...

    async def note_sent(self, key: str, now_ms: int,
                        done: tuple[str, str] | None = None) -> None:
        """A message went out; with ``done`` (zset, item id) its lease ends in
        the same step (one round trip for the two)."""
        ...

    async def note_engaged(self, key: str) -> None: ...

    async def claim_leased(self, key: str, ttl_ms: int, now_ms: int, zset: str, item_id: str,
                           payload: str, until_ms: int) -> bool:
        """:meth:`claim`, and when it succeeds (atomically) ``item_id`` with
        ``payload`` pending in ``zset`` until ``until_ms``."""
        ...

    async def defer(self, zset: str, item_id: str, payload: str, due_ms: int) -> bool:
        """``item_id`` pending in ``zset`` until ``due_ms`` (replacing its lease)."""
        ...

    async def take_due(self, zsets: Sequence[str], now_ms: int, limit: int,
                       lease_ms: int) -> list[tuple[str, int]]:
        """Pending items of the ``zsets`` (the buckets) due by ``now_ms`` with
        their hand-out count, at most ``limit`` per bucket; each stays
        pending, leased again until ``now_ms + lease_ms``."""
        ...

    async def done(self, zset: str, item_id: str) -> None:
        """``item_id`` is no longer pending."""
        ...

    async def deferred_count(self, zsets: Sequence[str]) -> int: ...


class MemoryPolicyStore:
    """In-process store (embedded runtime, dry runs, unit tests). Expiry
    follows the ``now_ms`` passed in, so a fake clock drives it."""

    def __init__(self) -> None:
        self._claims: dict[str, int] = {}  # key -> expiry ms
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (value, expiry ms)
        self._engagement: dict[str, tuple[int, int | None]] = {}
        self._deferred: dict[str, dict[str, tuple[int, str]]] = {}
        self._due: dict[str, list[tuple[int, str]]] = {}  # zset -> heap of (due, id)
        self._tries: dict[str, dict[str, int]] = {}  # zset -> id -> hand-outs

    async def claim(self, key: str, ttl_ms: int, now_ms: int) -> bool:
        expiry = self._claims.get(key)
        if expiry is not None and expiry > now_ms:
            return False
        self._claims[key] = now_ms + ttl_ms
        return True

    async def unclaim(self, key: str) -> None:
        self._claims.pop(key, None)

    async def reserve(self, counters: Sequence[tuple[str, int, int]], now_ms: int) -> int:
        values = []
        for index, (key, limit, _ttl) in enumerate(counters):
            value, expiry = self._counts.get(key, (0, 0))
            value = value if expiry > now_ms else 0
            if value >= limit:
                return index
            values.append(value)
        for (key, _limit, ttl), value in zip(counters, values, strict=True):
            self._counts[key] = (value + 1, now_ms + ttl)
        return -1

    async def engagement(self, key: str) -> tuple[int, int | None]:
        return self._engagement.get(key, (0, None))

    async def note_sent(self, key: str, now_ms: int,
                        done: tuple[str, str] | None = None) -> None:
        ignored, _ = self._engagement.get(key, (0, None))
        self._engagement[key] = (ignored + 1, now_ms)
        if done is not None:
            await self.done(*done)

    async def note_engaged(self, key: str) -> None:
        _, last = self._engagement.get(key, (0, None))
        self._engagement[key] = (0, last)

    async def claim_leased(self, key: str, ttl_ms: int, now_ms: int, zset: str, item_id: str,
                           payload: str, until_ms: int) -> bool:
        if not await self.claim(key, ttl_ms, now_ms):
            return False
        await self.defer(zset, item_id, payload, until_ms)
        return True

    async def defer(self, zset: str, item_id: str, payload: str, due_ms: int) -> bool:
        items = self._deferred.setdefault(zset, {})
        new = item_id not in items
        items[item_id] = (due_ms, payload)
        heapq.heappush(self._due.setdefault(zset, []), (due_ms, item_id))
        return new

    async def take_due(self, zsets: Sequence[str], now_ms: int, limit: int,
                       lease_ms: int) -> list[tuple[str, int]]:
        # In due order over all buckets, ``limit`` in all (as one set would):
        # a replay's released deliveries come out as they always did.
        taken: list[tuple[str, str]] = []  # (zset, item id)
        out: list[tuple[str, int]] = []
        while len(out) < limit:
            best: tuple[tuple[int, str], str] | None = None  # ((due, item id), zset)
            for zset in zsets:
                heap = self._due.get(zset, [])
                items = self._deferred.get(zset, {})
                while heap and (heap[0][1] not in items or items[heap[0][1]][0] != heap[0][0]):
                    heapq.heappop(heap)  # done, or re-leased / deferred since: stale
                if heap and heap[0][0] <= now_ms and (best is None or heap[0] < best[0]):
                    best = (heap[0], zset)
            if best is None:
                break
            (_due, item_id), zset = best
            heapq.heappop(self._due[zset])
            tries = self._tries.setdefault(zset, {})
            tries[item_id] = tries.get(item_id, 0) + 1
            out.append((self._deferred[zset][item_id][1], tries[item_id]))
            taken.append((zset, item_id))
        for zset, item_id in taken:
            await self.defer(zset, item_id, self._deferred[zset][item_id][1], now_ms + lease_ms)
        return out

    async def done(self, zset: str, item_id: str) -> None:
        self._deferred.get(zset, {}).pop(item_id, None)
        self._tries.get(zset, {}).pop(item_id, None)

    async def deferred_count(self, zsets: Sequence[str]) -> int:
        return sum(len(self._deferred.get(zset, {})) for zset in zsets)


_RESERVE = """
for i = 1, #KEYS do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  if v >= tonumber(ARGV[2 * i - 1]) then return i end
end
for i = 1, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
end
return 0
"""

# Due items stay pending, leased again until ARGV[3]; returns payload, tries pairs.
_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local p = redis.call('HGET', KEYS[2], id)
  if p then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    table.insert(out, p)
    table.insert(out, redis.call('HINCRBY', KEYS[3], id, 1))
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# The dedupe claim and its lease in one step: a crash cannot leave a claim
# without the pending entry that gets it delivered.
_CLAIM_LEASED = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
return 1
"""


class RedisPolicyStore:
    """The policy's state in Redis (``redis.asyncio.Redis``, decode_responses=True).
    Cap checks and increments are one Lua script, so concurrent workers
    cannot both take the last slot."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._reserve = redis.register_script(_RESERVE)
        self._take_due = redis.register_script(_TAKE_DUE)
        self._claim_leased = redis.register_script(_CLAIM_LEASED)

    async def claim(self, key: str, ttl_ms: int, now_ms: int) -> bool:
        return bool(await self._redis.set(key, str(now_ms), nx=True, px=max(1, ttl_ms)))

    async def unclaim(self, key: str) -> None:
        await self._redis.delete(key)

    async def reserve(self, counters: Sequence[tuple[str, int, int]], now_ms: int) -> int:
        if not counters:
            return -1
        args: list[int] = []
        for _key, limit, ttl in counters:
            args += [limit, max(1, ttl)]
        full = int(await self._reserve(keys=[c[0] for c in counters], args=args))
        return full - 1

    async def engagement(self, key: str) -> tuple[int, int | None]:
        ignored, last = await self._redis.hmget(key, ["ignored", "last"])
        return int(ignored or 0), int(last) if last is not None else None

    async def note_sent(self, key: str, now_ms: int,
                        done: tuple[str, str] | None = None) -> None:
        # Not a transaction: the user's key and the lease bucket are two
        # cluster slots. One round trip on one Redis (a cluster: per node).
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(key, "ignored", 1)
        pipe.hset(key, "last", str(now_ms))
        pipe.pexpire(key, _ENGAGEMENT_TTL_MS)
        if done is not None:
            end_leases(pipe, *done)
        await pipe.execute()

    async def note_engaged(self, key: str) -> None:
        await self._redis.hset(key, "ignored", "0")

    async def claim_leased(self, key: str, ttl_ms: int, now_ms: int, zset: str, item_id: str,
                           payload: str, until_ms: int) -> bool:
        got = await self._claim_leased(
            keys=[key, zset, payload_key(zset)],
            args=[str(now_ms), max(1, ttl_ms), until_ms, item_id, payload])
        return bool(int(got))

    async def defer(self, zset: str, item_id: str, payload: str, due_ms: int) -> bool:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zadd(zset, {item_id: due_ms})
        pipe.hset(payload_key(zset), item_id, payload)
        added, _ = await pipe.execute()
        return bool(added)

    async def take_due(self, zsets: Sequence[str], now_ms: int, limit: int,
                       lease_ms: int) -> list[tuple[str, int]]:
        # Which buckets have anything due: one pipelined round trip (a cluster
        # splits it by node); then the script on those only, at once (each
        # bucket is its own slot). Mostly nothing is due: one round trip.
        pipe = self._redis.pipeline(transaction=False)
        for zset in zsets:
            pipe.zrangebyscore(zset, "-inf", now_ms, start=0, num=1)
        due = [zset for zset, first in zip(zsets, await pipe.execute(), strict=True) if first]
        found = await asyncio.gather(*(
            self._take_due(keys=[zset, payload_key(zset), tries_key(zset)],
                           args=[now_ms, limit, now_ms + lease_ms]) for zset in due))
        flat = [r.decode() if isinstance(r, bytes) else r for rows in found for r in rows]
        return [(str(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def done(self, zset: str, item_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        end_leases(pipe, zset, item_id)
        await pipe.execute()

    async def deferred_count(self, zsets: Sequence[str]) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for zset in zsets:
            pipe.zcard(zset)
        return sum(int(n) for n in await pipe.execute())


def payload_key(zset: str) -> str:
    """The hash of a deferred set's request payloads, by item id."""
    return f"{zset}:payload"


def tries_key(zset: str) -> str:
    """The hash of how often each item of a deferred set was handed out."""
    return f"{zset}:tries"


def end_leases(pipe: Any, zset: str, *item_ids: str) -> None:
    """Queue on ``pipe`` the removal of items from a deferred set, with their
    payloads and hand-out counts."""
    pipe.zrem(zset, *item_ids)
    pipe.hdel(payload_key(zset), *item_ids)
    pipe.hdel(tries_key(zset), *item_ids)
