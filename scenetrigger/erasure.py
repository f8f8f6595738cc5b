"""Erasure and access: find, export and remove everything held about one user.

Where a user's data lives (each key builder in the code base, by module):

=========================  ===================================================
``channels.directory``     ``{p}user:{{id}}`` and its reverse index ``{p}addr:*``
``channels.consent``       ``{p}consent:{{id}}``
``channels.policy``        ``{p}eng:{{id}}``, ``{p}cap:{{id}}:*``, dedupe claims
                           ``{p}dd:{dNN}:*|{id}|*`` (trigger and journey ids embed
                           the user), deferred and leased requests in the user's
                           bucket ``{p}deferred:{dNN}`` (+ ``:payload``, ``:tries``)
``channels.feedback``      message index ``{p}msg:{message_id}`` (value names the user;
                           ``message_key``), once-markers ``{p}once:{kind}:{message_id}``
                           of its messages (``once_key``)
``channels.inbox``         ``{inbox}:{{id}}``, ``:acked``, ``:m:*`` (``inbox_key``)
``strategies.store``       ``{t}tags:{{id}}``, ``{t}score:{{id}}``
``strategies.service``     journey state: field ``{id}`` of the hash ``{t}journeys``
``channels.deadletter``    entries of the dead-letter stream whose message is the user's
Faust table (``agents``)   the engine state: removed by an ``erase`` event on the
                           events topic (the worker deletes the key: a tombstone
                           in the changelog)
=========================  ===================================================

``{p}`` is ``delivery.redis_prefix``, ``{t}`` the strategies' prefix
(``scenetrigger:``), ``{inbox}`` the inbox channel's ``key_prefix``; ``{{id}}``
is the user's id as a Redis Cluster hash tag, ``{dNN}`` the user's pending
bucket (``channels.redis_client``). Scans visit every master of a cluster.

:meth:`Eraser.erase` removes all of it, puts the user's hashed contact
points on the do-not-contact list (so a re-imported address is not
messaged) and keeps a receipt ``{p}erasure:{sha256(id)}``: when, and how many
of each kind were removed; never the data nor the id in clear.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from channels.consent import RedisConsentStore
from channels.deadletter import DEFAULT_STREAM
from channels.directory import RedisDirectory, address_hash
from channels.feedback import KINDS, message_key, once_key
from channels.inbox import inbox_key
from channels.policy import DeliveryRequest, caps_key, claim_key, deferred_key, engagement_key
from channels.policy_store import end_leases, payload_key
from channels.redis_client import get_many, lease_bucket
from config.channel_models import InboxModel
from config.clock import wall_ms
from config.models import AppConfig
from strategies.service import journeys_key
from strategies.store import DEFAULT_PREFIX, RedisTagStore

ERASE = "erase"  # the event type that makes the worker delete the user's table key
ForgetInWorker = Callable[[str, int], Awaitable[None]]


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
                 forget_in_worker: ForgetInWorker | None = None) -> None:
        self.redis = redis
        self.prefix = config.delivery.redis_prefix
        self.tags_prefix = tags_prefix
        self.inbox_prefixes = sorted({m.key_prefix for m in config.channels.values()
                                      if isinstance(m, InboxModel)}
                                     or {InboxModel(type="inbox").key_prefix})
        self.dead_letter_stream = dead_letter_stream
        self.directory = RedisDirectory(redis, self.prefix)
        self.consent = RedisConsentStore(redis, self.prefix)
        self.tags = RedisTagStore(redis, tags_prefix)
        self.journeys_key = journeys_key(tags_prefix)
        self.forget_in_worker = forget_in_worker

    async def _scan(self, pattern: str) -> list[str]:
        return [_text(k) async for k in self.redis.scan_iter(match=pattern, count=1000)]

    async def find(self, user_id: str) -> Found:
        p, u = self.prefix, _glob(user_id)
        found = Found()
        contact = await self.directory.get(user_id)
        direct = {"directory": [self.directory.key(user_id)],
                  "consent": [self.consent.key(user_id)],
                  "engagement": [engagement_key(p, user_id)],
                  "tags": [self.tags.tags_key(user_id)], "score": [self.tags.score_key(user_id)]}
        for kind, keys in direct.items():
            present = [k for k in keys if await self.redis.exists(k)]
            if present:
                found.keys[kind] = present
        if contact is not None:
            found.keys["address_index"] = [self.directory.addr_key(k, v)
                                           for k, v in contact.addresses()]
        patterns = {"caps": caps_key(p, u, "*"), "dedupe": claim_key(p, f"*|{u}|*", user_id)}
        for prefix in self.inbox_prefixes:
            patterns[f"inbox {prefix}"] = inbox_key(_glob(prefix), u) + "*"
        for kind, pattern in patterns.items():
            keys = await self._scan(pattern)
            if keys:
                found.keys[kind] = sorted(keys)
        messages = await self._messages_of(user_id)
        if messages:
            found.keys["message_index"] = messages
        # "Counted once" markers of the user's messages' opens and clicks.
        msg_prefix = message_key(p, "")
        markers = [once_key(p, kind, key[len(msg_prefix):]) for key in messages
                   for kind in KINDS]
        marked = set(await self._scan(once_key(_glob(p), "*", f"*|{u}|*")))
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
                                if DeliveryRequest.decode(raw).user_id == user_id)
        found.dead_letters = await self._dead_letters_of(user_id)
        return found

    def _pending(self, user_id: str) -> str:
        return deferred_key(self.prefix, lease_bucket(user_id))

    async def _exist_each(self, keys: list[str]) -> list[int]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return [int(n) for n in await pipe.execute()]

    async def _messages_of(self, user_id: str) -> list[str]:
        keys = await self._scan(message_key(_glob(self.prefix), "*"))
        out = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            for key, raw in zip(chunk, await get_many(self.redis, chunk), strict=True):
                if raw is not None and orjson.loads(raw)[0] == user_id:
                    out.append(key)
        return sorted(out)

    async def _dead_letters_of(self, user_id: str) -> list[str]:
        out = []
        start = "-"
        while True:
            chunk = await self.redis.xrange(self.dead_letter_stream, min=start, count=500)
            for entry_id, fields in chunk:
                raw = fields.get(b"message", fields.get("message"))
                try:
                    owner = orjson.loads(raw).get("user_id") if raw is not None else None
                except orjson.JSONDecodeError:
                    owner = None
                if owner == user_id:
                    out.append(_text(entry_id))
            if len(chunk) < 500:
                return out
            start = "(" + _text(chunk[-1][0])

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
            out["deferred"] = [orjson.loads(r) for r in raw if r is not None]
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
        contact = await self.directory.get(user_id)
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
        worker = "not asked (no broker)"
        if self.forget_in_worker is not None:
            await self.forget_in_worker(user_id, now)
            worker = "erase event sent: the worker deletes the table key (changelog tombstone)"
        receipt = {"erased_at_ms": now, "subject": subject_hash(user_id),
                   "removed": removed,
                   "do_not_contact": len(contact.addresses()) if contact is not None else 0,
                   "engine_state": worker}
        await self.redis.set(receipt_key(self.prefix, user_id), orjson.dumps(receipt))
        return receipt


def receipt_key(prefix: str, user_id: str) -> str:
    return f"{prefix}erasure:{subject_hash(user_id)}"


async def erased_at(redis: Any, prefix: str, user_ids: Collection[str]) -> dict[str, int]:
    """Of these users, the erased ones and when (their receipts' time), in one
    read. Kafka topics cannot drop one user's records: their readers (explain
    --broker, the console) drop the records of an erased user up to then."""
    users = list(user_ids)
    if not users:
        return {}
    found: dict[str, int] = {}
    for user, raw in zip(users, await get_many(redis, [receipt_key(prefix, u) for u in users]),
                         strict=True):
        if raw is not None:
            try:
                found[user] = int(orjson.loads(raw)["erased_at_ms"])
            except (ValueError, KeyError, TypeError):
                found[user] = 1 << 62  # an unreadable receipt: erased all the same
    return found


def subject_hash(user_id: str) -> str:
    """The receipt's name for the erased user: nobody can read the id back from it."""
    return hashlib.sha256(f"erasure\n{user_id}".encode()).hexdigest()
