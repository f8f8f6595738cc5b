"""Admin HTTP API of the user directory (mounted by ``scenetrigger serve``).

``GET /users/{id}`` (the record and its consent), ``PUT`` (replace the
record), ``PATCH`` (merge fields; ``null`` clears one), ``DELETE`` (erase
everything held about the user: :mod:`scenetrigger.ops.erasure`);
``PUT /users/{id}/consent/{channel type}`` with ``{"granted": true|false,
"purpose": "marketing"|"transactional", "source": "..."}`` records a consent
change (and puts it in the event stream). All need
``Authorization: Bearer TOKEN``, an admin token (``$SCENETRIGGER_ADMIN_TOKEN``
or a named one of ``$SCENETRIGGER_ADMIN_TOKENS``: :class:`config.tokens.AdminTokens`,
compared in constant time); with no token configured every request is refused.

``POST /users/identify`` (also ``POST /identify``) with ``{anonymous_id,
user_id[, ts]}``: the shop's backend says an anonymous id is a known user
(docs/security.md, "Identity"). It takes the backend's identify token
(``$SCENETRIGGER_IDENTIFY_TOKEN``) or an admin token; anything else is
refused with 403 and counted (``scenetrigger_identify_refused``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from channels.admin_auth import require_admin
from channels.audience.consent import PURPOSES, ConsentRecord, ConsentStore
from channels.audience.directory import Contact, ContactError, Directory, contact_from
from config.clock import wall_ms
from config.tokens import AdminTokens, bearer, token_matches

Eraser = Callable[[str], Awaitable[dict[str, Any]]]
Publish = Callable[[dict[str, Any]], Awaitable[None]]
RecordConsent = Callable[[str, str, str, bool, str], Awaitable[ConsentRecord]]
_CHANNEL_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_BODY = 256 * 1024


class UserAdmin:
    def __init__(self, directory: Directory, consent: ConsentStore, erase: Eraser,
                 record: RecordConsent, publish: Publish | None = None,
                 identify_token: str | None = None, refused: Any = None, *,
                 tokens: AdminTokens) -> None:
        self.tokens = tokens  # every route but identify: an admin token (channels.admin_auth)
        self.identify_token = identify_token
        self.refused = refused  # a prometheus Counter of refused identify requests, or None
        self.directory = directory
        self.consent = consent
        self.erase = erase
        self.record = record
        self.publish = publish

    def add_routes(self, app: web.Application) -> None:
        """Every route checks :attr:`tokens` itself (``channels.admin_auth``)."""
        app.router.add_post("/users/identify", self.identify)
        app.router.add_get("/users/{user_id}", self.get)
        app.router.add_put("/users/{user_id}", self.put)
        app.router.add_patch("/users/{user_id}", self.patch)
        app.router.add_delete("/users/{user_id}", self.delete)
        app.router.add_put("/users/{user_id}/consent/{channel}", self.put_consent)
        app.router.add_post("/identify", self.identify)

    async def _view(self, contact: Contact) -> web.Response:
        consent = await self.consent.all(contact.user_id)
        return web.json_response({**contact.to_dict(),
                                  "consent": {k: v.to_dict() for k, v in consent.items()}})

    async def get(self, request: web.Request) -> web.Response:
        require_admin(self.tokens, request)
        contact = await self.directory.get(request.match_info["user_id"])
        if contact is None:
            raise web.HTTPNotFound(text="no such user in the directory\n")
        return await self._view(contact)

    async def put(self, request: web.Request) -> web.Response:
        require_admin(self.tokens, request)
        user_id = request.match_info["user_id"]
        contact = _valid(lambda body: contact_from(user_id, _without_id(body, user_id)),
                         await _body(request))
        await self.directory.put(contact)
        return await self._view(contact)

    async def patch(self, request: web.Request) -> web.Response:
        require_admin(self.tokens, request)
        user_id = request.match_info["user_id"]
        old = await self.directory.get(user_id) or Contact(user_id)
        contact = _valid(lambda body: old.merged(_without_id(body, user_id)),
                         await _body(request))
        await self.directory.put(contact)
        return await self._view(contact)

    async def put_consent(self, request: web.Request) -> web.Response:
        require_admin(self.tokens, request)
        user_id, channel = request.match_info["user_id"], request.match_info["channel"]
        body = await _body(request)
        granted, purpose = body.get("granted"), body.get("purpose", "marketing")
        source = body.get("source", "api")
        if not _CHANNEL_TYPE.match(channel) or type(granted) is not bool \
                or purpose not in PURPOSES or not isinstance(source, str) or len(source) > 64:
            raise web.HTTPUnprocessableEntity(
                text='{"error": "want {granted: bool, purpose: marketing|transactional, '
                     'source: text}"}', content_type="application/json")
        change = await self.record(user_id, channel, purpose, granted, source)
        return web.json_response({"user_id": user_id, "channel": channel, "purpose": purpose,
                                  **change.to_dict()})

    async def identify(self, request: web.Request) -> web.Response:
        """The shop's backend on login: ``{anonymous_id, user_id[, ts]}`` becomes the
        ``identify`` event, keyed by the anonymous id (docs/audiences.md, "Identity")."""
        if not token_matches(bearer(request.headers.get("Authorization", "")),
                             self.identify_token):
            try:
                require_admin(self.tokens, request)
            except (web.HTTPUnauthorized, web.HTTPForbidden):
                if self.refused is not None:
                    self.refused.inc()
                raise web.HTTPForbidden(
                    text='{"error": "forbidden", "reason": "identify_unauthorized", "detail": '
                         '"identify needs the backend\'s identify token or an admin token"}',
                    content_type="application/json") from None
        if self.publish is None:
            raise web.HTTPServiceUnavailable(text="identify needs serve --broker\n")
        body = await _body(request)
        anonymous, known, ts = body.get("anonymous_id"), body.get("user_id"), body.get("ts")
        if not (isinstance(anonymous, str) and isinstance(known, str) and anonymous and known
                and anonymous != known and max(len(anonymous), len(known)) <= 256):
            raise web.HTTPUnprocessableEntity(
                text='{"error": "want {anonymous_id, user_id}: two different ids"}',
                content_type="application/json")
        now = ts if type(ts) is int else wall_ms()
        event = {"user_id": anonymous, "ts": now, "type": "identify", "known_id": known}
        await self.publish(event)
        return web.json_response({"accepted": True, **event}, status=202)

    async def delete(self, request: web.Request) -> web.Response:
        require_admin(self.tokens, request)
        return web.json_response(await self.erase(request.match_info["user_id"]))


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY, actual_size=len(raw))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="body is not JSON\n") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object\n")
    return body


def _without_id(body: dict[str, Any], user_id: str) -> dict[str, Any]:
    given = body.pop("user_id", user_id)
    if given != user_id:
        raise ContactError(f"user_id: {given!r} does not match the URL's {user_id!r}")
    return body


def _valid(build: Callable[[dict[str, Any]], Contact], body: dict[str, Any]) -> Contact:
    try:
        return build(body)
    except ContactError as exc:
        raise web.HTTPUnprocessableEntity(
            text=orjson.dumps({"error": str(exc)}).decode(),
            content_type="application/json") from None
