"""Consent and reachability: may this message go to this user on this channel?

Consent is held per user, per channel type (``email``, ``sms``, ``wechat``,
``push``, ``inbox``, ``webhook``) and per purpose (``marketing`` or
``transactional``), with the time and the source of the change
(:class:`ConsentRecord`). With no record, the channel type's configured
default decides (``delivery.audience.consent``): ``opt_out`` means allowed
until withdrawn, ``opt_in`` means not allowed until granted.

:class:`channels.audience.recipient.Audience` reads the user's directory
record, consent and do-not-contact hits once per decision into a
:class:`channels.audience.recipient.Recipient`, whose ``reach()`` says which
of the request's channels are reachable, or the reason none is
(:data:`REACH_REASONS`).

Redis keys (``delivery.redis_prefix``): ``{prefix}consent:{user_id}`` (HASH,
field ``{channel_type}:{purpose}``) and ``{prefix}dnc:{hash}`` (the hashed
contact points of erased or unknown opted-out people). ``hash`` is keyed
(:mod:`config.hash_keys`: HMAC-SHA256 under ``$SCENETRIGGER_HASH_KEY`` of the
``address_hash`` callers pass); the value is ``[ts, source, key id]``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import orjson

from channels.audience.directory import INDEXED_FIELDS, addr_key, dnc_generation_key, dnc_hits_key
from channels.redis_client import get_many, user_tag
from config.hash_keys import HashKeys

NO_ADDRESS = "no_address"
UNSUBSCRIBED = "unsubscribed"
NO_CONSENT = "no_consent"
DO_NOT_CONTACT = "do_not_contact"
REACH_REASONS = (NO_ADDRESS, DO_NOT_CONTACT, UNSUBSCRIBED, NO_CONSENT)
Purpose = Literal["marketing", "transactional"]
PURPOSES: tuple[Purpose, ...] = ("marketing", "transactional")


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    granted: bool
    ts: int
    source: str  # e.g. "import", "api", "unsubscribe_link", "sms_reply", "wechat_event"

    def to_dict(self) -> dict[str, Any]:
        return {"granted": self.granted, "ts": self.ts, "source": self.source}


class ConsentStore(Protocol):
    async def all(self, user_id: str) -> dict[str, ConsentRecord]:
        """Every record of the user, keyed ``{channel_type}:{purpose}``."""
        ...

    async def set(self, user_id: str, channel_type: str, purpose: str,
                  record: ConsentRecord) -> None: ...

    async def forget(self, user_id: str) -> bool: ...

    async def do_not_contact(self, hashes: Iterable[str], ts: int, source: str) -> None: ...

    async def blocked(self, hashes: Sequence[str]) -> list[bool]: ...


class MemoryConsentStore:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, ConsentRecord]] = {}
        self.dnc: dict[str, tuple[int, str]] = {}

    async def all(self, user_id: str) -> dict[str, ConsentRecord]:
        return dict(self.records.get(user_id, {}))

    async def set(self, user_id: str, channel_type: str, purpose: str,
                  record: ConsentRecord) -> None:
        self.records.setdefault(user_id, {})[f"{channel_type}:{purpose}"] = record

    async def forget(self, user_id: str) -> bool:
        return self.records.pop(user_id, None) is not None

    async def do_not_contact(self, hashes: Iterable[str], ts: int, source: str) -> None:
        for item in hashes:
            self.dnc.setdefault(item, (ts, source))

    async def blocked(self, hashes: Sequence[str]) -> list[bool]:
        return [h in self.dnc for h in hashes]


class RedisConsentStore:
    """``keys``: the hash keys (default: from the environment)."""

    def __init__(self, redis: Any, prefix: str = "st:", keys: HashKeys | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self.keys = keys if keys is not None else HashKeys.from_env()

    def key(self, user_id: str) -> str:
        return f"{self._prefix}consent:{user_tag(user_id)}"

    def dnc_key(self, hashed: str) -> str:
        return f"{self._prefix}dnc:{hashed}"

    async def all(self, user_id: str) -> dict[str, ConsentRecord]:
        return decode_consents(await self._redis.hgetall(self.key(user_id)))

    async def set(self, user_id: str, channel_type: str, purpose: str,
                  record: ConsentRecord) -> None:
        value = orjson.dumps([record.granted, record.ts, record.source])
        await self._redis.hset(self.key(user_id), f"{channel_type}:{purpose}", value)

    async def forget(self, user_id: str) -> bool:
        return bool(await self._redis.delete(self.key(user_id)))

    async def do_not_contact(self, hashes: Iterable[str], ts: int, source: str) -> None:
        """Put ``hashes`` on the list and raise the list's generation: the
        do-not-contact hits kept beside any user's record under an older
        generation are looked up again at their next decision
        (channels.audience.recipient); the indexed owner's are also cleared."""
        items = list(hashes)
        pipe = self._redis.pipeline(transaction=False)
        for item in items:
            pipe.set(self.dnc_key(self.keys.dnc(item)),
                     orjson.dumps([ts, source, self.keys.key_id]), nx=True)
        await pipe.execute()
        # After the entries are stored: a read that saw the old generation
        # looks them up again (channels.audience.recipient.RedisReader).
        await self._redis.incr(dnc_generation_key(self._prefix))
        owners = await get_many(self._redis, [addr_key(self._prefix, name, item)
                                              for item in items
                                              for name in INDEXED_FIELDS])
        users = {o.decode() if isinstance(o, bytes) else str(o) for o in owners if o is not None}
        if users:
            pipe = self._redis.pipeline(transaction=False)
            for user in sorted(users):
                pipe.delete(dnc_hits_key(self._prefix, user))
            await pipe.execute()

    async def blocked(self, hashes: Sequence[str]) -> list[bool]:
        """One round trip over every form an entry may have (current key,
        previous keys, unkeyed); one found in an old form moves under the
        current key (rotation and migration on read)."""
        if not hashes:
            return []
        forms = [self.keys.dnc_candidates(h) for h in hashes]
        found = await get_many(self._redis,
                               [self.dnc_key(f) for group in forms for f in group])
        out: list[bool] = []
        moves: list[tuple[str, str, Any]] = []
        width = len(forms[0])
        for n, group in enumerate(forms):
            values = found[n * width:(n + 1) * width]
            hit = next((i for i, v in enumerate(values) if v is not None), None)
            out.append(hit is not None)
            if hit is not None and hit > 0:
                moves.append((group[0], group[hit], values[hit]))
        if moves:
            await self._move(moves)
        return out

    async def _move(self, moves: Sequence[tuple[str, str, Any]]) -> None:
        # No MULTI: the two names may sit in different cluster slots. Written
        # before deleted, so a crash in between leaves both (the next read
        # moves it again), never neither.
        pipe = self._redis.pipeline(transaction=False)
        for current, old, value in moves:
            try:
                ts, source = orjson.loads(value)[:2]
            except (ValueError, TypeError):  # a damaged entry still blocks
                ts, source = 0, "migrated"
            pipe.set(self.dnc_key(current), orjson.dumps([ts, source, self.keys.key_id]),
                     nx=True)
            pipe.delete(self.dnc_key(old))
        await pipe.execute()


def decode_consents(raw: Mapping[Any, Any]) -> dict[str, ConsentRecord]:
    """The consent hash as read from Redis (either decode setting)."""
    out = {}
    for name, value in raw.items():
        granted, ts, source = orjson.loads(value)
        out[name.decode() if isinstance(name, bytes) else name] = ConsentRecord(
            bool(granted), int(ts), str(source))
    return out


def unsubscribe_signature(secret: bytes, user_id: str, channel_type: str) -> str:
    message = f"unsubscribe\n{user_id}\n{channel_type}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def unsubscribe_url(base_url: str, secret: bytes, user_id: str, channel_type: str) -> str:
    """The signed link of a marketing message (the page and the RFC 8058 POST)."""
    sig = unsubscribe_signature(secret, user_id, channel_type)
    return (f"{base_url.rstrip('/')}/unsubscribe/{quote(channel_type, safe='')}"
            f"?u={quote(user_id, safe='')}&s={sig}")
