"""Feedback: what happened to a message re-enters the event stream.

Routes (aiohttp):

* ``GET /t/o/{message_id}.gif?s=SIG``: open pixel (a 1x1 GIF; ``opened``),
  signed like the click link; one open counts once per message (an unsigned
  or repeated GET still gets the GIF but records nothing: 200 forged GETs used
  to make 200 ``opened`` events, inflating lead scores and resetting back-off);
* ``GET /t/c/{message_id}?u=URL&s=SIG``: click redirect (``clicked``).
  It redirects only to a URL signed by us for this message (HMAC-SHA256 with
  the tracking secret) or whose host is on the allow-list: never an open
  redirect. Anything else, or a target no redirect can carry (a port out of
  range), is 400 and records nothing. A click counts once per message and
  link, as an open counts once: a signed link once per link of the message;
  an unsigned one (allow-listed host) once per message, whatever its URL
  (it is not known to be a link of the message, so a varied path must not
  count again). Repeats still redirect; 50 GETs used to make 50 ``clicked``
  events, inflating lead scores and resetting back-off;
* ``POST /callbacks/{provider}``: provider delivery reports, protected by a
  token in a header (``Authorization: Bearer <token>``, or
  ``X-Callback-Token``; compared in constant time). A ``?token=`` query
  parameter is refused (401): URLs end up in access logs and proxies.
  Body: one object or a list, each ``{message_id, status, ts?}`` with
  status delivered / failed / opened / clicked / shared / converted. Only
  a message a provider sent counts: an on-site slot impression id
  (``slot:...``) is not accepted here.

One vocabulary: the event ``type`` is the plain kind (``opened``, not
``message_opened``) everywhere: these routes, the pipeline's delivered/failed,
the demo's simulated opens, strategy branches and ``scenetrigger report``.

Each produces a :class:`FeedbackEvent` for a pluggable :class:`FeedbackSink`
(the embedded engine's queue, a Kafka producer, a list in tests). Opens and
clicks also reset the user's back-off (``on_engaged``). Message metadata
(user, channel, scene or strategy/step) comes from a :class:`MessageIndex`
the senders fill.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO
from urllib.parse import quote, urlsplit

import orjson
from aiohttp import web

from config.clock import wall_ms
from config.tokens import callback_token, token_matches
from triggers.events import Event

log = logging.getLogger("scenetrigger.feedback")

# The feedback vocabulary: these are the ``type`` values of feedback events.
KINDS = ("delivered", "failed", "opened", "clicked", "shared", "converted")
ENGAGED = frozenset({"opened", "clicked", "shared"})  # reset the user's back-off
_STATUS_ALIASES = {"delivrd": "delivered", "success": "delivered", "sent": "delivered",
                   "undeliv": "failed", "error": "failed", "read": "opened", "open": "opened",
                   "click": "clicked", "share": "shared", "purchase": "converted",
                   "order": "converted"}
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
         b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
_MAX_BODY = 1 << 20
_URL_REFUSED = ("token in the URL refused (URLs end up in access logs): "
                "send it as 'Authorization: Bearer <token>'")


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """What happened to one message. ``scene`` is empty for a journey message;
    ``strategy``/``step`` are set for journey messages only."""

    kind: str  # one of KINDS; the event's ``type``
    user_id: str
    ts: int
    message_id: str
    channel: str
    scene: str
    detail: str | None = None
    strategy: str | None = None
    step: str | None = None
    source: str = "feedback"
    slot: str | None = None  # an on-site slot's impression or click (docs/ads.md)
    variant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user_id": self.user_id, "ts": self.ts, "type": self.kind,
                               "message_id": self.message_id, "channel": self.channel}
        if self.scene:
            out["scene"] = self.scene
        if self.strategy is not None:
            out["strategy"] = self.strategy
        if self.step is not None:
            out["step"] = self.step
        out["source"] = self.source
        if self.slot is not None:
            out["slot"], out["variant"] = self.slot, self.variant
        if self.detail is not None:
            out["detail"] = self.detail[:500]
        return out

    def to_event(self) -> Event:
        fields = self.to_dict()
        return Event(self.user_id, self.ts, fields["type"], fields)


@dataclass(frozen=True, slots=True)
class MessageMeta:
    user_id: str
    scene: str  # "" for a journey message
    channel: str
    strategy: str | None = None
    step: str | None = None
    slot: str | None = None  # an impression of an on-site slot (channels.feedback.slot_ids)
    variant: str | None = None

    def event(self, kind: str, message_id: str, ts: int,
              detail: str | None = None) -> FeedbackEvent:
        return FeedbackEvent(kind, self.user_id, ts, message_id, self.channel, self.scene,
                             detail, self.strategy, self.step, slot=self.slot,
                             variant=self.variant)


class FeedbackSink(Protocol):
    async def emit(self, event: FeedbackEvent) -> None: ...


class ListSink:
    """Collects events (tests, dry runs)."""

    def __init__(self) -> None:
        self.events: list[FeedbackEvent] = []

    async def emit(self, event: FeedbackEvent) -> None:
        self.events.append(event)


class QueueSink:
    """Feeds the embedded engine: puts :class:`~triggers.events.Event` objects
    on its input queue."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    async def emit(self, event: FeedbackEvent) -> None:
        await self._queue.put(event.to_event())


class JsonlSink:
    """Feedback events as JSON lines (``scenetrigger serve`` without a broker).
    To Kafka: :class:`channels.feedback.kafka_sink.KafkaFeedbackSink`."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    async def emit(self, event: FeedbackEvent) -> None:
        self._out.write(orjson.dumps(event.to_dict()).decode() + "\n")
        self._out.flush()


class MessageIndex(Protocol):
    async def remember(self, message_id: str, meta: MessageMeta) -> None: ...

    async def lookup(self, message_id: str) -> MessageMeta | None: ...

    async def first(self, kind: str, message_id: str, part: str = "") -> bool:
        """True only the first time ``kind`` is marked for ``message_id``
        (and ``part`` of it, e.g. one link of the message)."""
        ...


class MemoryMessageIndex:
    def __init__(self, max_items: int = 100_000) -> None:
        self._items: dict[str, MessageMeta] = {}
        self._marks: dict[tuple[str, str, str], None] = {}
        self._max = max_items

    async def remember(self, message_id: str, meta: MessageMeta) -> None:
        if len(self._items) >= self._max:
            self._items.pop(next(iter(self._items)))
        self._items[message_id] = meta

    async def lookup(self, message_id: str) -> MessageMeta | None:
        return self._items.get(message_id)

    async def first(self, kind: str, message_id: str, part: str = "") -> bool:
        marks = self._marks
        if (kind, message_id, part) in marks:
            return False
        if len(marks) >= self._max:
            marks.pop(next(iter(marks)))
        marks[(kind, message_id, part)] = None
        return True


def message_key(prefix: str, message_id: str) -> str:
    """A sent message's index entry (its user, scene, channel, strategy, step)."""
    return f"{prefix}msg:{message_id}"


def once_key(prefix: str, kind: str, message_id: str) -> str:
    """The marker that ``kind`` (opened, clicked) of a message was counted
    (a string; for clicks a set of the links counted)."""
    return f"{prefix}once:{kind}:{message_id}"


class RedisMessageIndex:
    def __init__(self, redis: Any, prefix: str = "st:", ttl_ms: int = 30 * 86_400_000) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_ms

    async def remember(self, message_id: str, meta: MessageMeta) -> None:
        value = orjson.dumps([meta.user_id, meta.scene, meta.channel, meta.strategy, meta.step])
        await self._redis.set(message_key(self._prefix, message_id), value, px=self._ttl)

    async def lookup(self, message_id: str) -> MessageMeta | None:
        raw = await self._redis.get(message_key(self._prefix, message_id))
        if raw is None:
            return None
        # Entries written before strategy/step were kept have three items.
        user_id, scene, channel, *journey = orjson.loads(raw)
        strategy, step = [*journey, None, None][:2]
        return MessageMeta(user_id, scene, channel, strategy, step)

    async def first(self, kind: str, message_id: str, part: str = "") -> bool:
        key = once_key(self._prefix, kind, message_id)
        if not part:
            return bool(await self._redis.set(key, "1", nx=True, px=self._ttl))
        # One key per message (erasure finds it by the message): the parts in a set.
        pipe = self._redis.pipeline(transaction=True)
        pipe.sadd(key, part)
        pipe.pexpire(key, self._ttl)
        added, _ = await pipe.execute()
        return bool(added)


def sign_click(secret: bytes, message_id: str, url: str) -> str:
    return hmac.new(secret, f"{message_id}\n{url}".encode(), hashlib.sha256).hexdigest()[:32]


def tracked_link(base_url: str, secret: bytes, message_id: str, url: str) -> str:
    sig = sign_click(secret, message_id, url)
    return f"{base_url.rstrip('/')}/t/c/{quote(message_id)}?u={quote(url, safe='')}&s={sig}"


def sign_open(secret: bytes, message_id: str) -> str:
    return hmac.new(secret, f"open\n{message_id}".encode(), hashlib.sha256).hexdigest()[:32]


def open_pixel_path(secret: bytes, message_id: str) -> str:
    return f"/t/o/{quote(message_id)}.gif?s={sign_open(secret, message_id)}"


def open_pixel_html(base_url: str, secret: bytes, message_id: str) -> str:
    src = base_url.rstrip("/") + open_pixel_path(secret, message_id)
    return f'<img src="{src}" width="1" height="1" alt="">'


_MAX_CALLBACK_AGE_MS = 30 * 86_400_000
Clock = Callable[[], int]
Engaged = Callable[[str], Awaitable[None]]


class FeedbackApp:
    """The feedback routes; mount with :meth:`add_routes` on any aiohttp app."""

    def __init__(self, sink: FeedbackSink, index: MessageIndex, secret: bytes,
                 callback_token: str | None, allow_hosts: list[str] | tuple[str, ...] = (),
                 on_engaged: Engaged | None = None, clock: Clock = wall_ms) -> None:
        self._sink = sink
        self._index = index
        self._secret = secret
        self._token = callback_token
        self._allow = {h.lower() for h in allow_hosts}
        self._on_engaged = on_engaged
        self._clock = clock

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/t/o/{message_id}.gif", self.open_pixel)
        app.router.add_get("/t/c/{message_id}", self.click)
        app.router.add_post("/callbacks/{provider}", self.callback)

    def application(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        self.add_routes(app)
        return app

    async def open_pixel(self, request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        sig = request.query.get("s", "").encode("utf-8", "surrogateescape")
        signed = bool(self._secret) and hmac.compare_digest(
            sig, sign_open(self._secret, message_id).encode())
        meta = await self._index.lookup(message_id) if signed else None
        # A slot's beacon is its impression: an exposure (delivered), not an open.
        kind = "opened" if meta is None or meta.slot is None else "delivered"
        if not signed:
            # Not the id: a slot's ends in the user id (an email address, say).
            log.info("unsigned open ignored", extra={"message_id_chars": len(message_id)})
        elif meta is not None and await self._index.first(
                kind, message_id):  # mail clients fetch the pixel on every view
            await self._record(kind, message_id)
        # The GIF either way: a mail client showing the message is not at fault.
        return web.Response(body=PIXEL, content_type="image/gif",
                            headers={"Cache-Control": "no-store, max-age=0"})

    async def click(self, request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        url = request.query.get("u", "")
        signed = self._allowed(message_id, url, request.query.get("s", ""))
        if signed is None:
            return web.Response(status=400, text="link not allowed\n")
        try:
            redirect = web.HTTPFound(url)  # before recording: a bad port was a 500
        except ValueError:
            return web.Response(status=400, text="link not allowed\n")
        meta = await self._index.lookup(message_id)
        # A slot impression's id is made up from its parts: only a signed link counts.
        if meta is not None and (signed or meta.slot is None) and await self._index.first(
                "clicked", message_id, _link_part(url) if signed else "unsigned"):
            await self._record("clicked", message_id)
        raise redirect

    async def callback(self, request: web.Request) -> web.Response:
        if "token" in request.query:  # even a right one: it is already in some log
            return web.json_response({"error": _URL_REFUSED}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        if not token_matches(callback_token(request.headers), self._token):
            return web.json_response({"error": "bad token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        items = body if isinstance(body, list) else [body]
        accepted = 0
        for item in items[:1000]:
            if not isinstance(item, dict) or not isinstance(item.get("message_id"), str):
                continue
            kind = _kind(item.get("status"))
            if kind is None:
                continue
            ts = item.get("ts")
            now = self._clock()
            # A provider's own time, if sane: within a month before now and a
            # minute after (an unbounded ts overflowed downstream arithmetic).
            sane = type(ts) is int and now - _MAX_CALLBACK_AGE_MS <= ts <= now + 60_000
            detail = item.get("error") or item.get("detail")
            if await self._record(kind, item["message_id"][:200], ts if sane else None,
                                  str(detail)[:500] if detail is not None else None,
                                  by_provider=True):
                accepted += 1
        return web.json_response({"accepted": accepted,
                                  "provider": request.match_info["provider"][:64]})

    def _allowed(self, message_id: str, url: str, sig: str) -> bool | None:
        """True: signed by us for this message; False: unsigned to an
        allow-listed host; None: not allowed."""
        # Browsers read "\\" as "/" and drop tabs/newlines, so urlsplit's host
        # may not be where they go: such URLs are refused outright.
        if any(c == "\\" or ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
            return None
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018  # raises for a port out of range (":99999")
        except ValueError:  # e.g. "http://[::1": a 400, not a 500
            return None
        if parts.scheme not in ("http", "https") or not host:
            return None
        expected = sign_click(self._secret, message_id, url).encode()
        given = sig.encode("utf-8", "surrogateescape")
        if sig and hmac.compare_digest(given, expected):  # bytes: any input compares
            return True if self._secret else None
        return False if host.lower() in self._allow else None

    async def _record(self, kind: str, message_id: str, ts: int | None = None,
                      detail: str | None = None, by_provider: bool = False) -> bool:
        meta = await self._index.lookup(message_id)
        if meta is None:
            log.info("feedback for an unknown message", extra={"message_id": message_id[:80]})
            return False
        if by_provider and meta.slot is not None:
            # No provider sent an on-site slot's impression: its id is made of
            # its parts (any user's can be written), so only serve's signed
            # pixel and click routes may report on it.
            log.info("provider feedback for a slot impression refused")
            return False
        event = meta.event(kind, message_id, ts if ts is not None else self._clock(), detail)
        await self._sink.emit(event)
        if kind in ENGAGED and self._on_engaged is not None:
            await self._on_engaged(meta.user_id)
        return True


def _link_part(url: str) -> str:
    """A counted link's mark: short, and not the URL (it may carry personal data)."""
    return hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _kind(status: Any) -> str | None:
    if not isinstance(status, str):
        return None
    value = status.strip().lower()
    if value in KINDS:
        return value
    return _STATUS_ALIASES.get(value)
