"""The user directory: who a user is to the channels (contact points,
locale, time zone, free attributes).

One :class:`Contact` per user, kept behind :class:`Directory`: Redis in
production (:class:`RedisDirectory`, one JSON string per user under
``{prefix}user:{user_id}`` plus a reverse index ``{prefix}addr:{kind}:{hash}``
of phone numbers, openids and emails, so an inbound "TD" reply or a WeChat
unsubscribe event finds its user), a dict in unit tests
(:class:`MemoryDirectory`).

Channels take their address from here: each channel type names the field
it sends to (``ChannelKind.address_field``: ``email``, ``phone``,
``openid``, ``push`` for the newest device token, or a free attribute's
name; :meth:`Contact.address_of`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any, Protocol

import orjson

from channels.errors import ChannelError
from channels.redis_client import get_many, user_tag
from triggers.zones import ZONE_RULE, is_zone_name

# The contact points of the reverse index (and of do-not-contact at erasure).
INDEXED_FIELDS = ("email", "phone", "openid", "push")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{4,30}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_ATTRS = 64
MAX_TOKENS = 10
_MAX_VALUE = 512
CONTACT_FIELDS = ("email", "phone", "openid", "push", "locale", "timezone", "attributes")


class ContactError(ChannelError):
    """A directory record that cannot be stored (the message says which field)."""


@dataclass(frozen=True, slots=True)
class PushToken:
    platform: str  # ios | android | web | ...
    token: str


@dataclass(frozen=True, slots=True)
class Contact:
    user_id: str
    email: str | None = None
    phone: str | None = None
    openid: str | None = None
    push: tuple[PushToken, ...] = ()
    locale: str | None = None
    timezone: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def address_of(self, field_name: str) -> str | None:
        """The contact point ``field_name``: ``email``, ``phone``, ``openid``,
        ``push`` (the newest token), else the free attribute of that name."""
        if field_name == "push":
            return self.push[-1].token if self.push else None
        if field_name in ("email", "phone", "openid"):
            value: str | None = getattr(self, field_name)
            return value
        return self.attributes.get(field_name)

    def addresses(self) -> list[tuple[str, str]]:
        """Every (kind, value) contact point, for the reverse index and do-not-contact."""
        out = [(k, v) for k in ("email", "phone", "openid")
               if (v := getattr(self, k)) is not None]
        return out + [("push", t.token) for t in self.push]

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "email": self.email, "phone": self.phone,
                "openid": self.openid,
                "push": [{"platform": t.platform, "token": t.token} for t in self.push],
                "locale": self.locale, "timezone": self.timezone,
                "attributes": dict(self.attributes)}

    def template_values(self) -> dict[str, str]:
        """``${user.<name>}`` values: the contact fields and the free attributes."""
        out = {f"user.{k}": v for k, v in self.attributes.items()}
        for name in ("email", "phone", "openid", "locale", "timezone"):
            value = getattr(self, name)
            if value is not None:
                out[f"user.{name}"] = value
        out["user.id"] = self.user_id
        return out

    def merged(self, patch: Mapping[str, Any]) -> Contact:
        """This record with ``patch``'s fields replaced (``null`` clears one);
        ``attributes`` merge key by key (a ``null`` value removes the key)."""
        data = self.to_dict()
        for key, value in patch.items():
            if key == "attributes" and isinstance(value, Mapping):
                attrs = dict(data["attributes"])
                for name, item in value.items():
                    if item is None:
                        attrs.pop(name, None)
                    else:
                        attrs[name] = item
                data["attributes"] = attrs
            else:
                data[key] = value
        return contact_from(self.user_id, data)


def address_hash(kind: str, value: str) -> str:
    """The hashed form of a contact point (reverse index, do-not-contact list)."""
    normal = normal_address(kind, value)
    return hashlib.sha256(f"{kind}\n{normal}".encode()).hexdigest()


def normal_address(kind: str, value: str) -> str:
    if kind == "email":
        return value.strip().lower()
    if kind == "phone":
        return re.sub(r"[ ()-]", "", value.strip())
    return value.strip()


def contact_from(user_id: str, data: Mapping[str, Any]) -> Contact:
    """Validate one record (a JSON object or CSV row); raises :class:`ContactError`."""
    unknown = sorted(set(data) - {"user_id", *CONTACT_FIELDS})
    if unknown:
        raise ContactError(f"unknown field(s): {', '.join(unknown)}")
    if not isinstance(user_id, str) or not user_id or len(user_id) > 256:
        raise ContactError("user_id: must be a non-empty string of at most 256 characters")
    email = _text(data, "email")
    if email is not None:
        try:
            Address(addr_spec=email)
        except (ValueError, IndexError):
            raise ContactError(f"email: not an address: {email!r}") from None
        if "@" not in email:
            raise ContactError(f"email: not an address: {email!r}")
    phone = _text(data, "phone")
    if phone is not None and not _PHONE.match(phone):
        raise ContactError(f"phone: not a phone number: {phone!r}")
    locale = _text(data, "locale")
    if locale is not None and not _LOCALE.match(locale):
        raise ContactError(f"locale: not a language tag: {locale!r} (e.g. zh-CN, en)")
    tz = _text(data, "timezone")
    if tz is not None and not is_zone_name(tz):  # "localtime" is the host's, not the user's
        raise ContactError(f"timezone: unknown time zone {tz!r} (use {ZONE_RULE})")
    return Contact(user_id, email, phone, _text(data, "openid"), _tokens(data.get("push")),
                   locale.replace("_", "-") if locale else None, tz,
                   _attributes(data.get("attributes")))


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > _MAX_VALUE or "\n" in value or "\r" in value:
        raise ContactError(f"{name}: must be one line of text (at most {_MAX_VALUE} characters)")
    return value.strip()


def _tokens(value: Any) -> tuple[PushToken, ...]:
    if value is None or value == "":
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOKENS:
        raise ContactError(f"push: must be a list of at most {MAX_TOKENS} "
                           "{platform, token} objects")
    out: dict[str, PushToken] = {}
    for item in value:
        if not isinstance(item, Mapping):
            raise ContactError("push: each entry must be {platform, token}")
        platform, token = _text(item, "platform"), _text(item, "token")
        if platform is None or token is None:
            raise ContactError("push: each entry needs a platform and a token")
        out.pop(token, None)
        out[token] = PushToken(platform, token)  # a token seen again is the newest
    return tuple(out.values())


def _attributes(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_ATTRS:
        raise ContactError(f"attributes: must be an object of at most {MAX_ATTRS} entries")
    out = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _ATTR.match(name):
            raise ContactError(f"attributes: bad name {name!r} (letters, digits, '_')")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ContactError(f"attributes.{name}: must be text or a number")
        text = str(item)
        if len(text) > _MAX_VALUE:
            raise ContactError(f"attributes.{name}: longer than {_MAX_VALUE} characters")
        out[name] = text
    return out


def encode(contact: Contact) -> bytes:
    return orjson.dumps(contact.to_dict())


_STORED = frozenset({"user_id", *CONTACT_FIELDS})


def decode(raw: str | bytes) -> Contact:
    """A stored record. Checked when written (:func:`contact_from`), so one
    of :func:`encode`'s shape is taken as it is (every delivery reads one;
    parsing the address again cost a third of a decision); any other shape
    goes through the checks, which name what is wrong."""
    data = orjson.loads(raw)
    if isinstance(data, dict) and data.keys() == _STORED:
        texts = [data[k] for k in ("user_id", "email", "phone", "openid", "locale", "timezone")]
        push, attrs = data["push"], data["attributes"]
        if (all(t is None or isinstance(t, str) for t in texts) and isinstance(texts[0], str)
                and isinstance(push, list) and isinstance(attrs, dict)
                and all(isinstance(t, dict) and isinstance(t.get("platform"), str)
                        and isinstance(t.get("token"), str) for t in push)
                and all(isinstance(v, str) for v in attrs.values())):
            user_id, email, phone, openid, locale, tz = texts
            return Contact(user_id, email, phone, openid,
                           tuple(PushToken(t["platform"], t["token"]) for t in push),
                           locale, tz, attrs)
    if not isinstance(data, dict):
        raise ContactError("a stored record must be a JSON object")
    return contact_from(data.pop("user_id", None), data)


class Directory(Protocol):
    async def get(self, user_id: str) -> Contact | None: ...

    async def put(self, contact: Contact) -> None:
        """Store ``contact`` whole (an upsert), keeping the reverse index right."""
        ...

    async def delete(self, user_id: str) -> bool: ...

    async def find(self, kind: str, value: str) -> str | None:
        """The user whose ``kind`` contact point is ``value`` (hash lookup)."""
        ...


class MemoryDirectory:
    def __init__(self) -> None:
        self.users: dict[str, Contact] = {}

    async def get(self, user_id: str) -> Contact | None:
        return self.users.get(user_id)

    async def put(self, contact: Contact) -> None:
        self.users[contact.user_id] = contact

    async def delete(self, user_id: str) -> bool:
        return self.users.pop(user_id, None) is not None

    async def find(self, kind: str, value: str) -> str | None:
        wanted = address_hash(kind, value)
        for contact in self.users.values():
            if any(address_hash(k, v) == wanted for k, v in contact.addresses() if k == kind):
                return contact.user_id
        return None


def addr_key(prefix: str, kind: str, hashed: str) -> str:
    """The reverse index entry of one hashed contact point (its user's id)."""
    return f"{prefix}addr:{kind}:{hashed}"


def dnc_generation_key(prefix: str) -> str:
    """A counter every do-not-contact addition raises: kept hits found under
    an older value are looked up again (an address many users share reaches
    them all, whoever the address index names)."""
    return f"{prefix}dnc-generation"


def dnc_hits_key(prefix: str, user_id: str) -> str:
    """Which of the user's hashed contact points are do-not-contact, and for
    which addresses that was found (channels.audience.recipient.RedisReader)."""
    return f"{prefix}dnch:{user_tag(user_id)}"


class RedisDirectory:
    """``redis.asyncio.Redis`` (either decode setting)."""

    def __init__(self, redis: Any, prefix: str = "st:") -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_tag(user_id)}"

    def addr_key(self, kind: str, value: str) -> str:
        return addr_key(self.prefix, kind, address_hash(kind, value))

    async def get(self, user_id: str) -> Contact | None:
        raw = await self.redis.get(self.key(user_id))
        return decode(raw) if raw is not None else None

    async def put(self, contact: Contact) -> None:
        await self.put_many([contact], [await self.get(contact.user_id)])

    async def get_many(self, user_ids: Sequence[str]) -> list[Contact | None]:
        """Many records in one round trip (an import's batch)."""
        if not user_ids:
            return []
        raws = await get_many(self.redis, [self.key(u) for u in user_ids])
        return [decode(raw) if raw is not None else None for raw in raws]

    async def put_many(self, contacts: Sequence[Contact], olds: Sequence[Contact | None]) -> None:
        """Store ``contacts`` (upserts), given what each replaces: one round
        trip. Not a transaction: the address index is in other cluster
        slots than the user's record (each write is whole; a re-import
        repairs a batch cut short)."""
        pipe = self.redis.pipeline(transaction=False)
        for contact, old in zip(contacts, olds, strict=True):
            for kind, value in (old.addresses() if old is not None else []):
                if (kind, value) not in contact.addresses():
                    pipe.delete(self.addr_key(kind, value))
            pipe.set(self.key(contact.user_id), encode(contact))
            for kind, value in contact.addresses():
                pipe.set(self.addr_key(kind, value), contact.user_id)
        await pipe.execute()

    async def delete(self, user_id: str) -> bool:
        old = await self.get(user_id)
        if old is None:
            return False
        keys = [self.key(user_id)] + [self.addr_key(k, v) for k, v in old.addresses()]
        await self.redis.delete(*keys)
        return True

    async def find(self, kind: str, value: str) -> str | None:
        raw = await self.redis.get(self.addr_key(kind, value))
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)
