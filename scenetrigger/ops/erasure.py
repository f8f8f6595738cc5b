"""Erasure and access: find, export and remove everything held about one user.

Where a user's data lives (each key builder in the code base, by module):

=========================  ===================================================
``channels.audience.directory``     ``{p}user:{{id}}`` and its reverse index ``{p}addr:*``,
                           the do-not-contact hits of its addresses ``{p}dnch:{{id}}``
``channels.audience.consent``       ``{p}consent:{{id}}``
``channels.policy.decide``        ``{p}eng:{{id}}``, ``{p}cap:{{id}}:*``, dedupe claims
                           ``{p}dd:{dNN}:*|{id}|*`` (trigger and journey ids embed
                           the user), deferred and leased requests in the user's
                           bucket ``{p}deferred:{dNN}`` (+ ``:payload``, ``:tries``)
``channels.feedback.events``      message index ``{p}msg:{message_id}`` (value names the user;
                           ``message_key``), once-markers ``{p}once:{kind}:{message_id}``
                           of its messages (``once_key``) and of its on-site slot
                           impressions (``slot:...:<user>``)
``channels.transports.inbox``         ``{inbox}:{{id}}``, ``:acked``, ``:m:*`` (``inbox_key``)
``strategies.store``       ``{t}tags:{{id}}``, ``{t}score:{{id}}``
``channels.audience.live_profile`` ``{t}profile:{{id}}``, the live profile on-site slots
                           read (``scenetrigger erase --broker`` also writes a tombstone
                           for the user on ``PREFIX.profiles``, as the worker does
                           when it takes the erase event)
``strategies.service``     journey state: field ``{id}`` of the hash ``{t}journeys``
``channels.transports.deadletter``    entries of the dead-letter stream whose message is the user's,
                           and those whose raw bytes name the user (below)
``channels.ads.state``     ``{p}ads:{{id}}``: first the user leaves every synced ad
                           audience (the receipt's ``ad_audiences``), then the key
                           goes; removals not sent wait hashed in ``{p}ads-pending``
Faust table (``agents``)   the engine state: removed by an ``erase`` event on the
                           events topic (the worker deletes the key: a tombstone
                           in the changelog)
=========================  ===================================================

A value that does not parse (a truncated record in the dead-letter, a damaged
deferred payload, message-index entry or directory record) is matched on its
raw bytes: the user's id and contact points (:mod:`scenetrigger.ops.raw_match`).

``{p}`` is ``delivery.redis_prefix``, ``{t}`` the strategies' prefix
(``scenetrigger:``), ``{inbox}`` the inbox channel's ``key_prefix``; ``{{id}}``
is the user's id as a Redis Cluster hash tag, ``{dNN}`` the user's pending
bucket (``channels.redis_client``). Scans visit every master of a cluster.

:meth:`Eraser.erase` removes all of it, puts the user's hashed contact
points on the do-not-contact list (so a re-imported address is not
messaged) and keeps a receipt ``{p}erasure:{keyed hash of id}``: when, and
how many of each kind were removed; never the data nor the id in clear. Both
hashes are keyed (:mod:`config.hash_keys`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from channels.ads.build import redis_forgetter
from channels.ads.state import RedisSyncState
from channels.ads.sync import Forget as ForgetInAds
from channels.audience.consent import RedisConsentStore
from channels.audience.directory import Contact, RedisDirectory, address_hash, dnc_hits_key
from channels.audience.live_profile import LiveProfileStore
from channels.erasure_receipts import receipt_key
from channels.errors import ChannelError
from channels.feedback.events import KINDS, message_key, once_key
from channels.feedback.slot_ids import impression_meta, impression_user
from channels.policy.decide import (
    DeliveryRequest,
    caps_key,
    claim_key,
    deferred_key,
    engagement_key,
)
from channels.policy.store import end_leases, payload_key
from channels.redis_client import get_many, lease_bucket
from channels.transports.deadletter import DEFAULT_STREAM, DeadLetterStore
from channels.transports.inbox import inbox_key
from config.channel_models import InboxModel
from config.clock import wall_ms
from config.hash_keys import HashKeys
from config.models import AppConfig
from scenetrigger.ops.migrate import claim_user
from scenetrigger.ops.raw_match import RawMatcher
from strategies.service import journeys_key
from strategies.store import DEFAULT_PREFIX, RedisTagStore

ForgetInWorker = Callable[[str, int], Awaitable[None]]
# What a stored value that does not parse raises on the way to its model.
_UNPARSED = (ValueError, KeyError, IndexError, TypeError, AttributeError, ChannelError)


def _glob(text: str) -> str:
    """``text`` literal inside a Redis MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class Found:
    """What is held about one user, by kind: Redis keys, hash fields, entries."""

    keys: dict[str, list[str]] = field(default_factory=dict)  # kind -> whole keys
    journey_field: str | None = None  # the user's field of the journeys hash
    deferred: list[str] = field(default_factory=list)  # item ids in the deferred set
    dead_letters: list[str] = field(default_factory=list)  # stream entry ids

    def all_keys(self) -> list[str]:
        return [k for keys in self.keys.values() for k in keys]


class Eraser:
    def __init__(self, redis: Any, config: AppConfig, tags_prefix: str = DEFAULT_PREFIX,
                 dead_letter_stream: str = DEFAULT_STREAM,
                 forget_in_worker: ForgetInWorker | None = None,
                 keys: HashKeys | None = None,
                 forget_in_ads: ForgetInAds | None = None) -> None:
        self.redis = redis
        self.keys = keys if keys is not None else HashKeys.from_env()
        # Out of every synced ad audience first, while the contact points are here.
        self.forget_in_ads = forget_in_ads or redis_forgetter(redis, config, "erasure", self.keys)
        self.prefix = config.delivery.redis_prefix
        self.tags_prefix = tags_prefix
        self.inbox_prefixes = sorted({m.key_prefix for m in config.channels.values()
                                      if isinstance(m, InboxModel)}
                                     or {InboxModel(type="inbox").key_prefix})
        self.dead_letter_stream = dead_letter_stream
        self.directory = RedisDirectory(redis, self.prefix)
        self.consent = RedisConsentStore(redis, self.prefix, self.keys)
        self.tags = RedisTagStore(redis, tags_prefix)
        self.live_profiles = LiveProfileStore(redis, tags_prefix)
        self.journeys_key = journeys_key(tags_prefix)
        self.forget_in_worker = forget_in_worker

    def _owns(self, kind: str, key: str, user_id: str) -> bool:
        """A key a pattern scan found is the user's, not one whose id merely
        contains theirs (a journey id ``j|strategy|v1|other|...`` holds ``|v1|``; a
        user id ``u}x`` starts like ``u``'s tag)."""
        if kind == "dedupe":
            return claim_user(key[len(claim_key(self.prefix, "", user_id)):]) == user_id
        if kind == "caps":
            # A longer id's key holds the "}" closing its tag; a "{" may be the
            # user's own, in a channel's name (``ch:in{b``).
            return "}" not in key[len(caps_key(self.prefix, user_id, "")):]
        if kind.startswith("inbox "):
            base = inbox_key(kind.removeprefix("inbox "), user_id)
            return key == base or key.startswith(base + ":")
        return True

    async def _scan(self, pattern: str) -> list[str]:
        return [_text(k) async for k in self.redis.scan_iter(match=pattern, count=1000)]

    async def find(self, user_id: str) -> Found:
        p, u = self.prefix, _glob(user_id)
        found = Found()
        contact = await self._contact(user_id)
        matches = RawMatcher(user_id, contact.addresses() if contact is not None else ())
        direct = {"directory": [self.directory.key(user_id)],
                  "do_not_contact_hits": [dnc_hits_key(p, user_id)],
                  "consent": [self.consent.key(user_id)],
                  # left when no sink is configured now (forget_in_ads is None)
                  "ad_sync_state": [RedisSyncState(self.redis, p).key(user_id)],
                  "engagement": [engagement_key(p, user_id)],
                  "tags": [self.tags.tags_key(user_id)], "score": [self.tags.score_key(user_id)],
                  "live_profile": [self.live_profiles.key(user_id)]}
        for kind, keys in direct.items():
            present = [k for k in keys if await self.redis.exists(k)]
            if present:
                found.keys[kind] = present
        if contact is not None:  # an address shared with another user stays theirs
            index = [self.directory.addr_key(k, v) for k, v in contact.addresses()]
            owners = await get_many(self.redis, index) if index else []
            mine = [k for k, owner in zip(index, owners, strict=True)
                    if owner is not None and _text(owner) == user_id]
            if mine:
                found.keys["address_index"] = mine
        patterns = {"caps": caps_key(p, u, "*"), "dedupe": claim_key(p, f"*|{u}|*", user_id)}
        for prefix in self.inbox_prefixes:
            patterns[f"inbox {prefix}"] = inbox_key(_glob(prefix), u) + "*"
        for kind, pattern in patterns.items():
            keys = [k for k in await self._scan(pattern) if self._owns(kind, k, user_id)]
            if keys:
                found.keys[kind] = sorted(keys)
        messages = await self._messages_of(user_id, matches)
        if messages:
            found.keys["message_index"] = messages
        # "Counted once" markers of the user's messages' opens and clicks.
        msg_prefix = message_key(p, "")
        markers = [once_key(p, kind, key[len(msg_prefix):]) for key in messages
                   for kind in KINDS]
        once_head = once_key(p, "", "")[:-1]  # "{p}once:"; then KIND:MESSAGE_ID
        marked = {k for k in await self._scan(once_key(_glob(p), "*", f"*|{u}|*"))
                  if claim_user(k[len(once_head):].partition(":")[2]) == user_id}
        # An on-site slot's impressions: no index entry, the user is in the id.
        for key in await self._scan(once_key(_glob(p), "*", "slot:*:" + impression_user(user_id))):
            meta = impression_meta(key[len(once_head):].partition(":")[2])
            if meta is not None and meta.user_id == user_id:
                marked.add(key)
        for start in range(0, len(markers), 500):
            chunk = markers[start:start + 500]
            marked.update(k for k, n in zip(chunk, await self._exist_each(chunk), strict=True)
                          if n)
        if marked:
            found.keys["feedback_markers"] = sorted(marked)
        if await self.redis.hexists(self.journeys_key, user_id):
            found.journey_field = user_id
        payloads = await self.redis.hgetall(payload_key(self._pending(user_id)))
        found.deferred = sorted(_text(item) for item, raw in payloads.items()
                                if _owned(raw, user_id, matches, _request_owner))
        found.dead_letters = await self._dead_letters_of(user_id, matches)
        return found

    async def _contact(self, user_id: str) -> Contact | None:
        """The directory record; None when absent or damaged (its key is
        removed all the same: ``find`` checks it by name)."""
        try:
            return await self.directory.get(user_id)
        except _UNPARSED:
            return None

    def _pending(self, user_id: str) -> str:
        return deferred_key(self.prefix, lease_bucket(user_id))

    async def _exist_each(self, keys: list[str]) -> list[int]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return [int(n) for n in await pipe.execute()]

    async def _messages_of(self, user_id: str, matches: RawMatcher) -> list[str]:
        keys = await self._scan(message_key(_glob(self.prefix), "*"))
        out = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            for key, raw in zip(chunk, await get_many(self.redis, chunk), strict=True):
                if raw is not None and _owned(raw, user_id, matches, _index_owner):
                    out.append(key)
        return sorted(out)

    async def _dead_letters_of(self, user_id: str, matches: RawMatcher) -> list[str]:
        """Entries whose message is the user's; with no message that parses
        (a record, or a damaged message), those whose raw bytes, source or
        error name the user."""
        out = []
        async for letter in DeadLetterStore(self.redis, self.dead_letter_stream).entries():
            if letter.message is not None:
                mine = letter.message.user_id == user_id
            else:
                mine = any(matches(x) for x in (letter.raw, letter.source, letter.error))
            if mine:
                out.append(letter.entry_id)
        return out

    async def export(self, user_id: str) -> dict[str, Any]:
        """Everything held in Redis about ``user_id`` (an access request), by kind."""
        found = await self.find(user_id)
        out: dict[str, Any] = {"user_id": user_id, "keys": {}}
        for kind, keys in found.keys.items():
            out["keys"][kind] = {key: await self._dump(key) for key in keys}
        if found.journey_field is not None:
            raw = await self.redis.hget(self.journeys_key, user_id)
            out["journeys"] = {"key": self.journeys_key, "field": user_id,
                               "value": _text(raw)}
        if found.deferred:
            raw = await self.redis.hmget(payload_key(self._pending(user_id)), found.deferred)
            out["deferred"] = [_json_or_raw(r) for r in raw if r is not None]
        if found.dead_letters:
            out["dead_letters"] = [{"id": _text(i), **{_text(k): _text(v) for k, v in f.items()}}
                                   for entry in found.dead_letters
                                   for i, f in await self.redis.xrange(
                                       self.dead_letter_stream, min=entry, max=entry)]
        return out

    async def _dump(self, key: str) -> Any:
        kind = _text(await self.redis.type(key))
        if kind == "string":
            return _text(await self.redis.get(key))
        if kind == "hash":
            return {_text(k): _text(v) for k, v in (await self.redis.hgetall(key)).items()}
        if kind == "set":
            return sorted(_text(v) for v in await self.redis.smembers(key))
        if kind == "zset":
            return [[_text(m), s] for m, s in await self.redis.zrange(key, 0, -1, withscores=True)]
        if kind == "stream":
            return [{"id": _text(i), **{_text(k): _text(v) for k, v in f.items()}}
                    for i, f in await self.redis.xrange(key)]
        if kind == "list":
            return [_text(v) for v in await self.redis.lrange(key, 0, -1)]
        return None

    async def erase(self, user_id: str, now_ms: int | None = None) -> dict[str, Any]:
        """Remove everything; returns (and stores) the receipt."""
        now = wall_ms() if now_ms is None else now_ms
        contact = await self._contact(user_id)
        ads = (await self.forget_in_ads(user_id, contact, now)
               if self.forget_in_ads is not None else None)
        found = await self.find(user_id)
        if contact is not None:
            await self.consent.do_not_contact(
                [address_hash(k, v) for k, v in contact.addresses()], now, "erasure")
        removed = {kind: len(keys) for kind, keys in found.keys.items()}
        # Key by key, not a transaction: on a Redis Cluster the keys are in
        # many slots (the pipeline goes node by node). A repeated erase finishes.
        pipe = self.redis.pipeline(transaction=False)
        for key in found.all_keys():
            pipe.delete(key)
        if found.journey_field is not None:
            pipe.hdel(self.journeys_key, user_id)
            removed["journey_state"] = 1
        if found.deferred:
            end_leases(pipe, self._pending(user_id), *found.deferred)
            removed["deferred"] = len(found.deferred)
        if found.dead_letters:
            pipe.xdel(self.dead_letter_stream, *found.dead_letters)
            removed["dead_letters"] = len(found.dead_letters)
        await pipe.execute()
        receipt = {"erased_at_ms": now, "subject": self.keys.subject(user_id),
                   "key_id": self.keys.key_id,
                   "removed": removed,
                   "do_not_contact": len(contact.addresses()) if contact is not None else 0,
                   "engine_state": "not asked (no broker)"}
        if ads is not None:
            receipt["ad_audiences"] = ads
        name = receipt_key(self.prefix, user_id, self.keys)
        if self.forget_in_worker is not None:
            # The receipt before the erase event: the readers that must not
            # rebuild the user from records read after it (journeys, the
            # profiles consumer) find it from then on.
            receipt["engine_state"] = "erase event not sent yet"
            await self.redis.set(name, orjson.dumps(receipt))
            await self.forget_in_worker(user_id, now)
            receipt["engine_state"] = ("erase event sent: the worker deletes the table key "
                                       "(changelog tombstone)")
        await self.redis.set(name, orjson.dumps(receipt))
        return receipt


def _owned(raw: Any, user_id: str, matches: RawMatcher, owner: Callable[[Any], str]) -> bool:
    """The value is the user's: by its parsed owner, or by its raw bytes when
    it does not parse."""
    try:
        return owner(raw) == user_id
    except _UNPARSED:
        return matches(raw)


def _json_or_raw(raw: Any) -> Any:
    """A stored value as its JSON, or as ``{"raw": text}`` when it does not parse."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"raw": _text(raw)}


def _index_owner(raw: Any) -> str:
    return str(orjson.loads(raw)[0])


def _request_owner(raw: Any) -> str:
    return DeliveryRequest.decode(raw).user_id
