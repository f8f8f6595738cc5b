"""``GET /slots/{slot}?user=ID&exp=UNIX_S&sig=SIG`` on ``serve``: the content
of an on-site slot for this visitor now (docs/ads.md, "On-site slots"), and
``GET /slots.js``, the snippet that shows it (``/slots-demo.html``, a
try-out page with one slot, only with ``serve --slots-demo``: a production
``serve`` answers it 404).

One Redis round trip per signed request: the visitor's live profile
(:mod:`channels.audience.live_profile`) and tags (``strategies.store``) in
one pipeline (the same cluster slot: both keys carry the user's hash tag).
The catalog is read through a cache. ``sig`` is the shop backend's
:func:`config.tokens.slot_signature` of the user and ``exp`` (unix seconds,
at most :data:`config.tokens.SIG_MAX_TTL_S` ahead), under
``$SCENETRIGGER_SLOT_SECRET``: without ``sig`` the answer is the slot's
default content, read from no state and tracked for no one; with it, no or
a malformed ``exp`` is 400, a wrong signature, a past ``exp`` or one too far
ahead 403, each with its ``reason``. A Redis that is away is a 503 (the serve
middleware). Unknown slot: 404.

A signed answer carries the impression's beacon (the open pixel, signed for
the impression: docs/security.md) and click-redirect links; with the slot's
``impressions: served`` the impression is recorded as the answer leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from channels.audience.live_profile import LiveProfileStore, decode_live_profile
from channels.content.slots import SlotAnswer, SlotContent
from channels.feedback.events import FeedbackSink, open_pixel_path, tracked_link
from channels.feedback.slot_ids import impression_id, impression_meta
from config.clock import wall_ms
from config.tokens import refuse_signed_until, slot_signature
from scenetrigger.serve.csp import content_security_policy
from strategies.store import RedisTagStore
from triggers.wire import MalformedRecord

log = logging.getLogger("scenetrigger.slots")
WEB = Path(__file__).resolve().parents[1] / "web"
SNIPPET, DEMO = WEB / "slots.js", WEB / "slots-demo.html"
MAX_USER_CHARS = 256


class SlotRoutes:
    def __init__(self, slots: SlotContent, redis: Any, prefix: str, slot_secret: str,
                 tracking_secret: bytes, sink: FeedbackSink, base_url: str | None = None,
                 clock: Callable[[], int] = wall_ms, demo: bool = False) -> None:
        self._slots = slots
        self._redis = redis
        self._profiles = LiveProfileStore(redis, prefix)
        self._tags = RedisTagStore(redis, prefix)
        self._secret = slot_secret
        self._tracking = tracking_secret
        self._sink = sink
        self._base = (base_url or "").rstrip("/")
        self._clock = clock
        self._demo = demo
        self._tasks: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/slots.js", snippet)
        if self._demo:  # off by default: 404 on a production serve
            app.router.add_get("/slots-demo.html", demo_page)
        app.router.add_get("/slots/{slot}", self.get)

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["slot"]
        if name not in self._slots:
            return _json({"error": f"no slot named {name[:64]!r}"}, 404)
        user = request.query.get("user", "")
        if not user or len(user) > MAX_USER_CHARS:
            return _json({"error": f"user=ID is required (1 to {MAX_USER_CHARS} characters)"},
                         400)
        sig = request.query.get("sig", "")
        now = self._clock()
        refused = self._refused(user, request.query.get("exp"), sig, now // 1000) if sig else None
        if refused is not None:
            return refused
        signed = bool(sig)
        profile, tags = await self._state(user) if signed else (None, frozenset[str]())
        answer = await self._slots.choose(name, user, profile, tags, now)
        body = self._body(answer, user, now, signed)
        model = self._slots.model(name)
        mid = body.pop("impression_id", None)
        if mid is not None and model.impressions == "served":
            self._record(mid, now)
            body["impression"] = None  # counted already: no beacon to count it again
        return _json(body, 200, {"Cache-Control": model.cache_control()})

    def _refused(self, user: str, exp_text: str | None, sig: str,
                 now_s: int) -> web.Response | None:
        """None when ``sig`` signs ``user`` until ``exp`` (the check inbox
        tokens share, :func:`config.tokens.refuse_signed_until`); else the
        refusal, with its reason."""
        secret = self._secret  # none configured: nothing matches (closed by default)
        refusal = refuse_signed_until(
            sig, exp_text, now_s,
            lambda exp: slot_signature(secret, user, exp) if secret else None)
        return None if refusal is None else _json(refusal.body(), refusal.status,
                                                  {"Cache-Control": "no-store"})

    async def _state(self, user: str) -> tuple[Any, frozenset[str]]:
        """The live profile (None: unknown or unreadable) and tags, in one trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._profiles.key(user))
        pipe.smembers(self._tags.tags_key(user))
        raw, members = await pipe.execute()
        tags = frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        if raw is None:
            return None, tags
        try:
            return decode_live_profile(user, raw).profile, tags
        except MalformedRecord as exc:  # a visitor gets the default, not a 500
            log.warning("unreadable live profile", extra={"reason": exc.reason})
            return None, tags

    def _body(self, answer: SlotAnswer, user: str, now: int, signed: bool) -> dict[str, Any]:
        if not (signed and self._tracking):  # tracked for no one: plain links
            return {**answer.to_json(), "impression": None}
        mid = impression_id(answer.slot, answer.choice.variant, now, user)
        secret, links = self._tracking, dict[str, str]()

        def link(url: str) -> str:  # once per URL: the text, html and list all show it
            found = links.get(url)
            if found is None:
                found = links[url] = tracked_link(self._base, secret, mid, url)
            return found

        body = answer.to_json(link)
        body["impression"] = self._base + open_pixel_path(secret, mid)
        body["impression_id"] = mid
        return body

    def _record(self, mid: str, now: int) -> None:
        """The impression, as the answer leaves (not awaited: a slow sink
        must not slow the page; a failure is logged)."""
        meta = impression_meta(mid)
        if meta is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._emit(meta.event("delivered", mid, now)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _emit(self, event: Any) -> None:
        try:
            await self._sink.emit(event)
        except Exception as exc:  # the answer is sent already
            log.warning("slot impression not recorded", extra={"error": repr(exc)[:200]})


async def snippet(_request: web.Request) -> web.Response:
    return web.Response(body=SNIPPET.read_bytes(), content_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=300",
                                 "X-Content-Type-Options": "nosniff"})


async def demo_page(_request: web.Request) -> web.Response:
    """A page with one slot, for whoever is named in its own query string."""
    page = DEMO.read_bytes()
    return web.Response(body=page, content_type="text/html", headers={
        "Content-Security-Policy": content_security_policy(page, own_files=True),
        "X-Content-Type-Options": "nosniff"})


def _json(body: dict[str, Any], status: int,
          headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers={"X-Content-Type-Options": "nosniff", **(headers or {})})
