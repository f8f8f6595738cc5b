"""The recipient: who one message goes to, resolved once per decision.

:meth:`Audience.resolve` reads the user's directory record, consent and
do-not-contact hits (one Redis round trip: :class:`RedisReader`) and answers
with a frozen :class:`Recipient`: the contact, the consents, which contact
points are on the do-not-contact list, the locale and the time zone, each
resolved in one order: the directory, then the user's events (the profile),
then the default. Content selection, segmentation and the policy all read
the same value; :meth:`Recipient.reach` is pure.

:class:`OpenAudience` is the dry run's: no directory, no consent; every
channel is reachable, locale and zone come from the events or the default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from channels.audience.consent import (
    DO_NOT_CONTACT,
    NO_ADDRESS,
    NO_CONSENT,
    UNSUBSCRIBED,
    ConsentRecord,
    ConsentStore,
    Purpose,
    RedisConsentStore,
    decode_consents,
)
from channels.audience.directory import (
    Contact,
    Directory,
    RedisDirectory,
    address_hash,
    decode,
    dnc_generation_key,
    dnc_hits_key,
)
from channels.redis_client import is_cluster
from triggers.profile import Profile

_PRECEDENCE = (UNSUBSCRIBED, DO_NOT_CONTACT, NO_CONSENT, NO_ADDRESS)
# How long the do-not-contact hits of a user's addresses are kept beside the
# record: an entry added for a known address clears them at once
# (RedisConsentStore.do_not_contact); this only bounds a missed clearing.
DNC_HITS_TTL_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Reach:
    """Which of a request's channels the recipient can be reached on."""

    allowed: tuple[str, ...]  # the request's channels that may be used, in order
    reason: str | None  # why channels were refused (see _PRECEDENCE; None: none was)
    refused: tuple[tuple[str, str], ...] = ()  # (channel, reason) of each refused channel

    @property
    def figures(self) -> str:
        """What the decision log shows: each refused channel and why."""
        return "; ".join(f"{channel}: {why}" for channel, why in self.refused)


@dataclass(frozen=True, slots=True)
class Rules:
    """What the audience knows of the channels (from the channel kinds:
    :func:`channels.assembly.audience_rules`): each configured channel's type,
    the consent default and the directory field of each type, and whether
    the answers are checked (False: an open audience, every channel reachable)."""

    kinds: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)  # type -> directory field
    checked: bool = True

    def kind(self, channel: str) -> str:
        """A channel's type; a channel not configured (a dry run's log) is its own."""
        return self.kinds.get(channel, channel)

    def allowed_by_default(self, channel_type: str, purpose: Purpose) -> bool:
        if purpose == "transactional":
            return True  # a receipt or a password reset needs no opt-in
        return self.defaults.get(channel_type, "opt_out") == "opt_out"


_OPEN = Rules(checked=False)


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    purpose: Purpose
    locale: str | None  # the directory's, else the events', else the default
    zone: str | None  # the same order; the policy falls back on its default zone
    contact: Contact | None = None
    consents: Mapping[str, ConsentRecord] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()  # address fields whose address is do-not-contact
    rules: Rules = _OPEN

    def kind(self, channel: str) -> str:
        return self.rules.kind(channel)

    def reach(self, channels: Sequence[str]) -> Reach:
        """The channels this message may use, in order, or why none (pure)."""
        if not self.rules.checked:
            return Reach(tuple(channels), None)
        allowed: list[str] = []
        refused: list[tuple[str, str]] = []
        for channel in channels:
            why = self._refusal(self.kind(channel))
            if why is None:
                allowed.append(channel)
            else:
                refused.append((channel, why))
        # The user's own choice says most: an opt-out outranks a missing address.
        reasons = {why for _, why in refused}
        reason = next((r for r in _PRECEDENCE if r in reasons), None)
        return Reach(tuple(allowed), reason, tuple(refused))

    def _refusal(self, kind: str) -> str | None:
        address_field = self.rules.fields.get(kind)
        if address_field is not None:
            if self.contact is None or self.contact.address_of(address_field) is None:
                return NO_ADDRESS
            if address_field in self.blocked:
                return DO_NOT_CONTACT
        record = self.consents.get(f"{kind}:{self.purpose}")
        if record is not None:
            return None if record.granted else UNSUBSCRIBED
        return None if self.rules.allowed_by_default(kind, self.purpose) else NO_CONSENT

    def unsubscribe_kind(self, channel: str) -> str | None:
        """The channel type whose signed unsubscribe link a message on
        ``channel`` carries: marketing email of a checked audience (an open
        one holds no consent to withdraw)."""
        kind = self.kind(channel)
        if self.rules.checked and self.purpose == "marketing" and kind == "email":
            return kind
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one read of a user holds: the record, the consents and the
    address fields whose current address is on the do-not-contact list."""

    contact: Contact | None
    consents: dict[str, ConsentRecord]
    blocked: frozenset[str]


class Reader(Protocol):
    async def read(self, user_id: str) -> Snapshot: ...


def _hashes(contact: Contact | None, fields: Iterable[str]) -> dict[str, str]:
    """The hash of each address the channels send to, by field: once per read."""
    if contact is None:
        return {}
    return {name: address_hash(name, address) for name in fields
            if (address := contact.address_of(name)) is not None}


def _snapshot(contact: Contact | None, consents: dict[str, ConsentRecord],
              hashes: Mapping[str, str], hits: Iterable[str]) -> Snapshot:
    found = frozenset(hits)
    return Snapshot(contact, consents,
                    frozenset(name for name, hashed in hashes.items() if hashed in found))


class StoreReader:
    """Any directory and consent store, one call each (the memory stores)."""

    def __init__(self, directory: Directory, consent: ConsentStore,
                 fields: Iterable[str]) -> None:
        self.directory = directory
        self.consent = consent
        self.fields = tuple(sorted(set(fields)))

    async def read(self, user_id: str) -> Snapshot:
        contact = await self.directory.get(user_id)
        consents = await self.consent.all(user_id)
        hashes = _hashes(contact, self.fields)
        flags = await self.consent.blocked(list(hashes.values())) if hashes else []
        return _snapshot(contact, consents, hashes,
                         (h for h, hit in zip(hashes.values(), flags, strict=True) if hit))


# The user's record, consent hash and kept do-not-contact hits: all three
# keys carry the user's hash tag (one cluster slot); on one node the list's
# generation comes in the same call (KEYS[4]).
_READ = """
return {redis.call('GET', KEYS[1]) or false, redis.call('HGETALL', KEYS[2]),
        redis.call('GET', KEYS[3]) or false,
        KEYS[4] and (redis.call('GET', KEYS[4]) or false) or false}
"""


class RedisReader:
    """One round trip, in the user's cluster slot: the record, the consent
    hash and the record's do-not-contact hits (kept beside them, for the
    address hashes and the list generation they were found under). Hits
    missing, or found for other addresses or an older generation, are
    looked up and kept again (two more round trips). On a cluster the
    generation's key lives in another slot: it is read beside the script,
    concurrently."""

    def __init__(self, directory: RedisDirectory, consent: RedisConsentStore,
                 fields: Iterable[str]) -> None:
        self.directory = directory
        self.consent = consent
        self.fields = tuple(sorted(set(fields)))
        self._redis: Any = directory.redis
        self._prefix = directory.prefix
        self._generation_key = dnc_generation_key(self._prefix)
        self._cluster = is_cluster(self._redis)
        # One command (a pipeline of three cost a third more here, in redis-py).
        self._read = self._redis.register_script(_READ)

    async def _fetch(self, user_id: str, hits_key: str) -> tuple[Any, Any, Any, Any]:
        keys = [self.directory.key(user_id), self.consent.key(user_id), hits_key]
        if not self._cluster:
            raw, flat, kept, generation = await self._read(keys=[*keys, self._generation_key])
            return raw, flat, kept, generation
        (raw, flat, kept, _), generation = await asyncio.gather(
            self._read(keys=keys), self._redis.get(self._generation_key))
        return raw, flat, kept, generation

    async def read(self, user_id: str) -> Snapshot:
        hits_key = dnc_hits_key(self._prefix, user_id)
        raw, flat, kept, generation = await self._fetch(user_id, hits_key)
        generation = int(generation) if generation else 0
        consents = dict(zip(flat[::2], flat[1::2], strict=True))
        contact = decode(raw) if raw is not None else None
        hashes = _hashes(contact, self.fields)
        of = sorted(hashes.values())
        if kept is not None:
            stored = orjson.loads(kept)
            if len(stored) == 3 and stored[0] == of and stored[2] == generation:
                return _snapshot(contact, decode_consents(consents), hashes, stored[1])
        flags = await self.consent.blocked(of) if of else []
        found = [h for h, hit in zip(of, flags, strict=True) if hit]
        # Kept under the generation read before the lookup: an entry added
        # since raised it, so the next read looks again.
        await self._redis.set(hits_key, orjson.dumps([of, found, generation]),
                              px=DNC_HITS_TTL_MS)
        return _snapshot(contact, decode_consents(consents), hashes, found)


class Audience:
    """Directory + consent + do-not-contact, resolved into a :class:`Recipient`.

    ``rules`` map a configured channel name to its type (``email``, ``sms``,
    ...) and a type to its consent default and directory field; a channel
    not in them (a dry run's log) needs no address and is checked against
    consent under its own name.
    """

    def __init__(self, directory: Directory, consent: ConsentStore, rules: Rules,
                 transactional: Iterable[str] = (), default_tz: str | None = None,
                 default_locale: str | None = None) -> None:
        self.directory = directory
        self.consent = consent
        self.rules = rules
        self.transactional = frozenset(transactional)
        self.default_tz = default_tz
        self.default_locale = default_locale
        fields = rules.fields.values()
        self.reader: Reader = (
            RedisReader(directory, consent, fields)
            if isinstance(directory, RedisDirectory) and isinstance(consent, RedisConsentStore)
            else StoreReader(directory, consent, fields))

    def purpose(self, scene: str) -> Purpose:
        return "transactional" if scene in self.transactional else "marketing"

    async def resolve(self, user_id: str, purpose: Purpose,
                      profile: Profile | None) -> Recipient:
        snap = await self.reader.read(user_id)
        contact = snap.contact
        return Recipient(
            user_id, purpose,
            (contact.locale if contact else None) or _events_locale(profile)
            or self.default_locale,
            (contact.timezone if contact else None) or _events_zone(profile) or self.default_tz,
            contact, snap.consents, snap.blocked, self.rules)

    def unchecked(self, user_id: str, purpose: Purpose, profile: Profile | None) -> Recipient:
        """Without a read: the events' locale and zone (a lead handoff's)."""
        return open_recipient(user_id, purpose, profile, self.default_tz, self.default_locale)


class OpenAudience:
    """The dry run's audience: nothing to read, every channel reachable."""

    def __init__(self, default_tz: str | None = None, default_locale: str | None = None,
                 transactional: Iterable[str] = ()) -> None:
        self.default_tz = default_tz
        self.default_locale = default_locale
        self.transactional = frozenset(transactional)

    def purpose(self, scene: str) -> Purpose:
        return "transactional" if scene in self.transactional else "marketing"

    async def resolve(self, user_id: str, purpose: Purpose,
                      profile: Profile | None) -> Recipient:
        return self.unchecked(user_id, purpose, profile)

    def unchecked(self, user_id: str, purpose: Purpose, profile: Profile | None) -> Recipient:
        return open_recipient(user_id, purpose, profile, self.default_tz, self.default_locale)


AnyAudience = Audience | OpenAudience


def open_recipient(user_id: str, purpose: Purpose = "marketing", profile: Profile | None = None,
                   default_tz: str | None = None, default_locale: str | None = None,
                   locale: str | None = None) -> Recipient:
    """A recipient of no directory: ``locale`` (a preview's), else the events', else the default."""
    return Recipient(user_id, purpose, locale or _events_locale(profile) or default_locale,
                     _events_zone(profile) or default_tz)


def _events_locale(profile: Profile | None) -> str | None:
    return profile.locale if profile is not None else None


def _events_zone(profile: Profile | None) -> str | None:
    return profile.tz if profile is not None else None
