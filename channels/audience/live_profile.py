"""The profile a visitor has now, where on-site reads find it in one round trip.

The worker (and the embedded runtimes) publish each user's latest
:class:`~triggers.profile.Profile`; a store keeps it in Redis so that
``serve`` can answer ``GET /slots/{slot}`` without the engine's state.

Key ``<prefix>profile:{<user>}`` (the user's hash tag, so it sits in the same
cluster slot as their tags); value ``orjson([updated_ms, profile.to_wire()])``,
the same profile wire as a trigger record carries (:mod:`triggers.wire`).
A newer ``updated_ms`` wins: a replayed older record never overwrites it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from channels.redis_client import user_tag
from triggers.profile import Profile
from triggers.wire import BAD_FIELD, INVALID_JSON, MalformedRecord, profile_from_wire

DEFAULT_PREFIX = "scenetrigger:"
# A visitor not seen for this long gets the default slot content; the key goes.
DEFAULT_TTL_S = 90 * 86_400

# SET only when the stored value is older (or absent): records may arrive again
# after a redo, or out of order across two writers.
_PUT_NEWER = """
local old = redis.call('GET', KEYS[1])
if old then
  local at = tonumber(string.match(old, '^%[(%-?%d+)'))
  if at and at > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class LiveProfile:
    user_id: str
    updated_ms: int
    profile: Profile


def encode_live_profile(profile: Profile, updated_ms: int) -> bytes:
    return orjson.dumps([updated_ms, profile.to_wire()])


def decode_live_profile(user_id: str, value: bytes | str) -> LiveProfile:
    """The inverse of :func:`encode_live_profile`; :class:`MalformedRecord` when unusable."""
    try:
        pair = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord(INVALID_JSON, str(exc)[:200]) from None
    if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is int):
        raise MalformedRecord(BAD_FIELD, "live profile is not [updated_ms, profile]")
    return LiveProfile(user_id, pair[0], profile_from_wire(pair[1]))


class LiveProfileStore:
    """Over a ``redis.asyncio`` client (plain or cluster, bytes responses)."""

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX,
                 ttl_s: int = DEFAULT_TTL_S) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._put = client.register_script(_PUT_NEWER)

    def key(self, user_id: str) -> str:
        return f"{self._prefix}profile:{user_tag(user_id)}"

    async def put(self, user_id: str, profile: Profile, updated_ms: int) -> bool:
        """Store it unless a newer one is there; whether it was stored."""
        value = encode_live_profile(profile, updated_ms)
        stored = await self._put(keys=[self.key(user_id)],
                                 args=[value, updated_ms, self._ttl_s])
        return bool(stored)

    async def put_many(self, items: Iterable[tuple[str, Profile, int]]) -> int:
        """Several users' profiles; how many were stored (one call per user:
        their keys sit in different cluster slots)."""
        stored = 0
        for user_id, profile, updated_ms in items:
            stored += await self.put(user_id, profile, updated_ms)
        return stored

    async def get(self, user_id: str) -> LiveProfile | None:
        raw = await self._redis.get(self.key(user_id))
        return None if raw is None else decode_live_profile(user_id, raw)

    async def delete(self, user_id: str) -> None:
        """Erasure: the profile goes at once."""
        await self._redis.delete(self.key(user_id))
