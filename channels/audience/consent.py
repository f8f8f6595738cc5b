"""Consent and reachability: may this message go to this user on this channel?

Consent is held per user, per channel type (``email``, ``sms``, ``wechat``,
``push``, ``inbox``, ``webhook``) and per purpose (``marketing`` or
``transactional``), with the time and the source of the change
(:class:`ConsentRecord`). With no record, the channel type's configured
default decides (``delivery.audience.consent``): ``opt_out`` means allowed
until withdrawn, ``opt_in`` means not allowed until granted.

:class:`Audience` is what the delivery policy asks, once per decision
(:meth:`Audience.reach`): it reads the user's directory record, consent and
the do-not-contact list, and says which of the request's channels are
reachable, or the reason none is (:data:`REACH_REASONS`).

Redis keys (``delivery.redis_prefix``): ``{prefix}consent:{user_id}`` (HASH,
field ``{channel_type}:{purpose}``) and ``{prefix}dnc:{hash}`` (the hashed
contact points of erased or unknown opted-out people). ``hash`` is keyed
(:mod:`config.hash_keys`: HMAC-SHA256 under ``$SCENETRIGGER_HASH_KEY`` of the
``address_hash`` callers pass); the value is ``[ts, source, key id]``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import orjson

from channels.audience.directory import ADDRESS_FIELD, Contact, Directory, address_hash
from channels.redis_client import get_many, user_tag
from config.hash_keys import HashKeys

NO_ADDRESS = "no_address"
UNSUBSCRIBED = "unsubscribed"
NO_CONSENT = "no_consent"
DO_NOT_CONTACT = "do_not_contact"
REACH_REASONS = (NO_ADDRESS, DO_NOT_CONTACT, UNSUBSCRIBED, NO_CONSENT)
_PRECEDENCE = (UNSUBSCRIBED, DO_NOT_CONTACT, NO_CONSENT, NO_ADDRESS)
_PREFETCH_S = 1.0
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
        raw = await self._redis.hgetall(self.key(user_id))
        out = {}
        for name, value in raw.items():
            granted, ts, source = orjson.loads(value)
            out[name.decode() if isinstance(name, bytes) else name] = ConsentRecord(
                bool(granted), int(ts), str(source))
        return out

    async def set(self, user_id: str, channel_type: str, purpose: str,
                  record: ConsentRecord) -> None:
        value = orjson.dumps([record.granted, record.ts, record.source])
        await self._redis.hset(self.key(user_id), f"{channel_type}:{purpose}", value)

    async def forget(self, user_id: str) -> bool:
        return bool(await self._redis.delete(self.key(user_id)))

    async def do_not_contact(self, hashes: Iterable[str], ts: int, source: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for item in hashes:
            pipe.set(self.dnc_key(self.keys.dnc(item)),
                     orjson.dumps([ts, source, self.keys.key_id]), nx=True)
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


@dataclass(frozen=True, slots=True)
class Reach:
    """The audience's answer for one request."""

    contact: Contact | None
    allowed: tuple[str, ...]  # the request's channels that may be used, in order
    reason: str | None  # why channels were refused (see _PRECEDENCE; None: none was)
    refused: tuple[tuple[str, str], ...] = ()  # (channel, reason) of each refused channel

    @property
    def figures(self) -> str:
        """What the decision log shows: each refused channel and why."""
        return "; ".join(f"{channel}: {why}" for channel, why in self.refused)

    @property
    def timezone(self) -> str | None:
        return self.contact.timezone if self.contact is not None else None


class Audience:
    """Directory + consent + do-not-contact, as the delivery policy sees them.

    ``kinds`` maps a configured channel name to its type (``email``, ``sms``,
    ...); a channel not in it (a dry run's log) needs no address and is
    checked against consent under its own name.
    """

    def __init__(self, directory: Directory, consent: ConsentStore,
                 kinds: Mapping[str, str], defaults: Mapping[str, str],
                 transactional: Iterable[str] = ()) -> None:
        self.directory = directory
        self.consent = consent
        self.kinds = dict(kinds)
        self.defaults = dict(defaults)
        self.transactional = frozenset(transactional)
        # Records read for content selection just before the policy's reach():
        # taken once there, so a message costs one directory read, not two.
        self._prefetched: dict[str, tuple[float, Contact | None]] = {}

    async def contact(self, user_id: str) -> Contact | None:
        """The user's record, kept for the :meth:`reach` that follows."""
        if len(self._prefetched) > 4096:  # reads whose decision never came (errors)
            self._prefetched.clear()
        found = await self.directory.get(user_id)
        self._prefetched[user_id] = (time.monotonic(), found)
        return found

    def kind(self, channel: str) -> str:
        return self.kinds.get(channel, channel)

    def purpose(self, scene: str) -> Purpose:
        return "transactional" if scene in self.transactional else "marketing"

    def allowed_by_default(self, channel_type: str, purpose: Purpose) -> bool:
        if purpose == "transactional":
            return True  # a receipt or a password reset needs no opt-in
        return self.defaults.get(channel_type, "opt_out") == "opt_out"

    async def reach(self, user_id: str, scene: str, channels: Sequence[str]) -> Reach:
        read_at, contact = self._prefetched.pop(user_id, (0.0, None))
        fresh = time.monotonic() - read_at <= _PREFETCH_S  # read for this very decision
        if not channels:
            return Reach(contact if fresh else await self.directory.get(user_id), (), None)
        purpose = self.purpose(scene)
        # One after the other on purpose: concurrent reads would hold two pool
        # connections per decision (the pool's limit is hit under load).
        if not fresh:
            contact = await self.directory.get(user_id)
        consents = await self.consent.all(user_id)
        addresses = self._addresses(contact, channels)
        flags = await self.consent.blocked(self._hashes(channels, addresses))
        blocked = dict(zip(self._hashes(channels, addresses), flags, strict=True))
        allowed: list[str] = []
        refused: list[tuple[str, str]] = []
        for channel, address in zip(channels, addresses, strict=True):
            why = self._refusal(self.kind(channel), address, purpose, consents, blocked)
            if why is None:
                allowed.append(channel)
            else:
                refused.append((channel, why))
        # The user's own choice says most: an opt-out outranks a missing address.
        reasons = {why for _, why in refused}
        reason = next((r for r in _PRECEDENCE if r in reasons), None)
        return Reach(contact, tuple(allowed), reason, tuple(refused))

    def _addresses(self, contact: Contact | None,
                   channels: Sequence[str]) -> list[str | None]:
        """Per channel: its address, None when it needs one the user lacks, "" when none."""
        out: list[str | None] = []
        for channel in channels:
            kind = self.kind(channel)
            if kind not in ADDRESS_FIELD:
                out.append("")
            else:
                out.append(contact.address(kind) if contact is not None else None)
        return out

    def _hashes(self, channels: Sequence[str], addresses: Sequence[str | None]) -> list[str]:
        return [address_hash(ADDRESS_FIELD[self.kind(c)], a)
                for c, a in zip(channels, addresses, strict=True) if a]

    def _refusal(self, kind: str, address: str | None, purpose: Purpose,
                 consents: Mapping[str, ConsentRecord], blocked: Mapping[str, bool]) -> str | None:
        if address is None:
            return NO_ADDRESS
        if address and blocked.get(address_hash(ADDRESS_FIELD[kind], address)):
            return DO_NOT_CONTACT
        record = consents.get(f"{kind}:{purpose}")
        if record is not None:
            return None if record.granted else UNSUBSCRIBED
        return None if self.allowed_by_default(kind, purpose) else NO_CONSENT


def unsubscribe_signature(secret: bytes, user_id: str, channel_type: str) -> str:
    message = f"unsubscribe\n{user_id}\n{channel_type}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def unsubscribe_url(base_url: str, secret: bytes, user_id: str, channel_type: str) -> str:
    """The signed link of a marketing message (the page and the RFC 8058 POST)."""
    sig = unsubscribe_signature(secret, user_id, channel_type)
    return (f"{base_url.rstrip('/')}/unsubscribe/{quote(channel_type, safe='')}"
            f"?u={quote(user_id, safe='')}&s={sig}")
