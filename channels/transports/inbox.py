"""In-app inbox: a capped Redis stream per user, read and acknowledged over HTTP.

Keys (the ``{user}`` hash tag keeps one user's keys on one cluster slot):

- ``<prefix>:{<user>}``            stream, ``XADD MAXLEN ~ max_messages``
- ``<prefix>:{<user>}:acked``      set of acknowledged message ids
- ``<prefix>:{<user>}:m:<id>``     dedupe marker, ``SET NX`` with a TTL

Delivery is one Lua call, so a retried or replayed message id is stored once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from channels.base import BuildContext, ChannelKind, DeliveryResult, Message
from channels.redis_client import DEFAULT_REDIS_URL, is_cluster, redis_client
from channels.transports.retry import Attempt, RetryPolicy, Sleep, run_attempts
from channels.transports.send_batcher import Batcher
from channels.transports.wire import message_to_dict
from config.channel_models import InboxModel

_ADD = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
                        'message_id', ARGV[1], 'body', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {1, id}
end
return {0, ''}
"""

# Acknowledge ids present in the stream; prune acks of trimmed entries when
# the set outgrows twice the cap, so it stays bounded.
_ACK = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
local present = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'message_id' then present[fields[i + 1]] = true end
  end
end
local acked = 0
for _, id in ipairs(ARGV) do
  if present[id] then acked = acked + redis.call('SADD', KEYS[2], id) end
end
if redis.call('SCARD', KEYS[2]) > 2 * #entries + 16 then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if not present[id] then redis.call('SREM', KEYS[2], id) end
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return acked
"""


def inbox_key(prefix: str, user_id: str) -> str:
    """A user's inbox stream; its ``:acked`` set and ``:m:{message_id}``
    dedupe markers are this key and a suffix (one hash slot per user)."""
    return f"{prefix}:{{{user_id}}}"


@dataclass(frozen=True, slots=True)
class InboxItem:
    entry_id: str  # the stream id; its first part is the store time in ms
    message: dict[str, Any]
    read: bool

    def to_dict(self) -> dict[str, Any]:
        return {"entry_id": self.entry_id, "read": self.read, **self.message}


@dataclass(slots=True)
class InboxStore:
    """The Redis side of the inbox, shared by the channel and the HTTP routes."""

    redis: aioredis.Redis
    prefix: str = "scenetrigger:inbox"
    max_messages: int = 100
    retention_ms: int = 30 * 86_400_000
    dedupe_ttl_ms: int = 7 * 86_400_000
    _add: Any = field(default=None, init=False, repr=False)
    _ack: Any = field(default=None, init=False, repr=False)

    def stream_key(self, user_id: str) -> str:
        return inbox_key(self.prefix, user_id)

    async def add(self, message: Message) -> bool:
        """Store ``message``; False if its id was stored before (a duplicate)."""
        if self._add is None:
            self._add = self.redis.register_script(_ADD)
        created, _ = await self._add(**self._add_call(message))
        return bool(created)

    async def add_many(self, messages: Sequence[Message]) -> list[bool]:
        """:meth:`add` for many messages in one pipelined round trip."""
        if self._add is None:
            self._add = self.redis.register_script(_ADD)
        if is_cluster(self.redis):
            # A cluster pipeline cannot load a script a node lacks (NOSCRIPT):
            # one call per message, at once (each loads it where needed).
            return list(await asyncio.gather(*(self.add(m) for m in messages)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for message in messages:
                await self._add(**self._add_call(message), client=pipe)
            replies = await pipe.execute()
        return [bool(created) for created, _ in replies]

    def _add_call(self, message: Message) -> dict[str, list[Any]]:
        stream = self.stream_key(message.user_id)
        body = orjson.dumps(message_to_dict(message), default=str)
        return {"keys": [stream, f"{stream}:m:{message.message_id}"],
                "args": [message.message_id, self.max_messages, body, self.dedupe_ttl_ms,
                         self.retention_ms]}

    async def list(self, user_id: str, *, unread_only: bool = True,
                   limit: int = 50) -> list[InboxItem]:
        """Newest first."""
        stream = self.stream_key(user_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrevrange(stream, count=self.max_messages)  # MAXLEN ~ may keep a few more
            pipe.smembers(f"{stream}:acked")
            entries, acked = await pipe.execute()
        acked_ids = {_text(item) for item in acked}
        items: list[InboxItem] = []
        for entry_id, fields in entries:
            decoded = {_text(k): v for k, v in fields.items()}
            message_id = _text(decoded.get("message_id", b""))
            read = message_id in acked_ids
            if read and unread_only:
                continue
            items.append(InboxItem(_text(entry_id), orjson.loads(decoded["body"]), read))
            if len(items) >= limit:
                break
        return items

    async def ack(self, user_id: str, message_ids: Sequence[str]) -> int:
        """Mark messages read; returns how many were newly acknowledged."""
        if not message_ids:
            return 0
        if self._ack is None:
            self._ack = self.redis.register_script(_ACK)
        stream = self.stream_key(user_id)
        count = await self._ack(keys=[stream, f"{stream}:acked"], args=list(message_ids))
        return int(count)


@dataclass(slots=True)
class InboxChannel:
    """Delivers into :class:`InboxStore`. A duplicate message id counts as
    delivered (it is already in the inbox), so retries stay idempotent.
    With ``batch_max > 1`` concurrent sends share one pipelined round trip
    (see :mod:`channels.transports.send_batcher`); a failed batch is retried as a whole,
    which the per-message dedupe makes safe."""

    name: str
    store: InboxStore
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    owns_redis: bool = False
    batch_max: int = 1
    batch_linger_ms: int = 2
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)  # once: seeding is slow
    _batcher: Batcher[Message, DeliveryResult] | None = field(default=None, init=False,
                                                               repr=False)

    retries_internally = True

    async def send(self, message: Message) -> DeliveryResult:
        if self.batch_max > 1:
            if self._batcher is None:
                self._batcher = Batcher(self._send_batch, self.batch_max, self.batch_linger_ms,
                                        self._batch_failed)
            return await self._batcher.submit(message)
        return await self._store([message])

    async def _send_batch(self, messages: list[Message]) -> list[DeliveryResult]:
        result = await self._store(messages)
        return [replace(result, message_id=m.message_id) for m in messages]

    def _batch_failed(self, message: Message, exc: BaseException) -> DeliveryResult:
        return DeliveryResult(False, self.name, message.message_id, 1,
                              f"batch failed: {exc!r}", False)

    async def _store(self, messages: list[Message]) -> DeliveryResult:
        async def attempt() -> Attempt:
            try:
                if len(messages) == 1:
                    await self.store.add(messages[0])
                else:
                    await self.store.add_many(messages)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                return Attempt(False, f"redis unavailable: {exc}", True)
            except RedisError as exc:
                return Attempt(False, f"redis error: {exc}", False)
            return Attempt(True)

        return await run_attempts(messages[0], self.name, attempt, self.policy,
                                  sleep=self.sleep, rng=self.rng)

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
        if self.owns_redis:
            await self.store.redis.aclose()


Authorize = Callable[[web.Request, str], Awaitable[bool]]

_MAX_ACK_IDS = 500


def inbox_routes(store: InboxStore, authorize: Authorize,
                 prefix: str = "/inbox") -> list[web.RouteDef]:
    """``GET {prefix}/{user_id}[?all=1&limit=N]`` and ``POST {prefix}/{user_id}/ack``
    with ``{"ids": [...]}``; mount with ``app.add_routes(inbox_routes(store, authorize))``.

    ``authorize(request, user_id)`` decides who may read whose inbox (e.g. a
    session check in front of a real app). It is required: an inbox is
    personal data, so there is no open default."""

    async def allowed(request: web.Request, user_id: str) -> None:
        if not await authorize(request, user_id):
            raise web.HTTPForbidden(text="not your inbox")

    async def list_messages(request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        await allowed(request, user_id)
        try:
            limit = min(max(int(request.query.get("limit", "50")), 1), 1000)
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
        unread_only = request.query.get("all", "0") not in ("1", "true")
        items = await store.list(user_id, unread_only=unread_only, limit=limit)
        body = {"user_id": user_id, "messages": [item.to_dict() for item in items]}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def ack_messages(request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        await allowed(request, user_id)
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        ids = payload.get("ids") if isinstance(payload, dict) else None
        if (not isinstance(ids, list) or len(ids) > _MAX_ACK_IDS
                or not all(isinstance(i, str) for i in ids)):
            raise web.HTTPBadRequest(text=f'body must be {{"ids": [<= {_MAX_ACK_IDS} strings]}}')
        acked = await store.ack(user_id, cast(list[str], ids))
        return web.Response(body=orjson.dumps({"acked": acked}), content_type="application/json")

    return [
        web.get(prefix + "/{user_id}", list_messages),
        web.post(prefix + "/{user_id}/ack", ack_messages),
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def build(name: str, model: InboxModel, context: BuildContext) -> InboxChannel:
    """A ``type: inbox`` channel: the shared client, else its own from the
    variable ``redis_url_env`` names (the local default when unset)."""
    client = context.redis
    if client is None:
        client = redis_client(context.env.get(model.redis_url_env, DEFAULT_REDIS_URL))
    store = InboxStore(client, model.key_prefix, model.max_messages, model.retention,
                       model.dedupe_ttl)
    return InboxChannel(name, store, RetryPolicy.of(model.retry),
                        owns_redis=context.redis is None, batch_max=model.batch_max,
                        batch_linger_ms=model.batch_linger)


# The in-app inbox is keyed by the user's id: no address.
KIND = ChannelKind("inbox", InboxModel, build)
