"""Consent over HTTP: the unsubscribe page, RFC 8058 one-click, inbound SMS
replies and WeChat follow/unfollow events.

* ``GET /unsubscribe/{channel}?u=USER&s=SIG``: the preference centre
  (:mod:`channels.audience.preference_page`: the masked address, each channel and
  purpose with its state; a GET never changes anything: mail scanners follow
  links). ``POST`` to the same URL changes consent: a mail client's one-click
  POST (body ``List-Unsubscribe=One-Click``, RFC 8058, a short plain-text
  answer), or the page's form with ``action`` = ``unsubscribe`` (also the
  default), ``resubscribe`` (the link's channel only) or ``all`` (marketing
  on every channel type). ``SIG`` is :func:`channels.audience.consent.unsubscribe_signature`.
* ``POST /inbound/sms/{provider}``: an inbound SMS (JSON or form; ``from`` /
  ``mobile`` / ``phone`` and ``text`` / ``content``), with the callback token
  (``Authorization: Bearer``, as for delivery reports). A reply of ``TD``,
  ``T``, ``退订``, ``STOP`` or ``UNSUBSCRIBE`` opts the number out of
  marketing SMS: the user it belongs to, or, when no user has it, the
  hashed number goes on the do-not-contact list.
* ``POST /inbound/wechat``: the WeChat Official Account's event push
  (``signature`` = SHA1 of the sorted token, timestamp and nonce, as WeChat
  signs it); an ``unsubscribe`` event opts that openid's user out of WeChat.

Every change is a :class:`channels.feedback.events.FeedbackEvent` of type
``unsubscribed`` (or ``subscribed``, from the admin API) on the feedback
sink, so it enters the event stream.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from channels.audience.consent import ConsentRecord, ConsentStore, unsubscribe_signature
from channels.audience.directory import Directory, address_hash
from channels.audience.preference_page import ACTIONS, ALL, RESUBSCRIBE, mask_address, pick_language
from channels.audience.preference_page import render as render_page
from channels.audience.preference_page import states as consent_states
from channels.feedback.events import FeedbackEvent, FeedbackSink
from config.clock import wall_ms
from config.preference_models import PreferencesModel
from config.tokens import callback_token, token_matches

OPT_OUT_WORDS = frozenset({"td", "t", "退订", "stop", "unsubscribe"})
UNSUBSCRIBED = "unsubscribed"  # the event type of a withdrawn consent
SUBSCRIBED = "subscribed"  # ... and of a granted one
_MAX_BODY = 64 * 1024
_XML_FIELD = r"<{0}>\s*(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))\s*</{0}>"


def is_opt_out(text: str) -> bool:
    """A reply that means "stop": the whole message is one of the words."""
    return text.strip().strip(".!。！").lower() in OPT_OUT_WORDS


class StreamedConsent:
    """A consent store whose every change is also an event on ``sink``
    (``unsubscribed`` / ``subscribed``, with channel type, purpose, source)."""

    def __init__(self, inner: ConsentStore, sink: FeedbackSink) -> None:
        self.inner = inner
        self.sink = sink

    async def all(self, user_id: str) -> dict[str, ConsentRecord]:
        return await self.inner.all(user_id)

    async def set(self, user_id: str, channel_type: str, purpose: str,
                  record: ConsentRecord) -> None:
        await self.inner.set(user_id, channel_type, purpose, record)
        kind = SUBSCRIBED if record.granted else UNSUBSCRIBED
        await self.sink.emit(FeedbackEvent(kind, user_id, record.ts, "", channel_type, "",
                                           purpose, source=record.source))

    async def forget(self, user_id: str) -> bool:
        return await self.inner.forget(user_id)

    async def do_not_contact(self, hashes: Iterable[str], ts: int, source: str) -> None:
        await self.inner.do_not_contact(hashes, ts, source)

    async def blocked(self, hashes: Sequence[str]) -> list[bool]:
        return await self.inner.blocked(hashes)


class ConsentRoutes:
    def __init__(self, directory: Directory, consent: ConsentStore, secret: bytes,
                 sink: FeedbackSink, callback_token: str | None,
                 wechat_token: str | None = None, clock: Callable[[], int] = wall_ms,
                 preferences: PreferencesModel | None = None,
                 channel_types: Sequence[str] = ("email",),
                 defaults: Mapping[str, str] | None = None,
                 address_fields: Mapping[str, str] | None = None) -> None:
        """``defaults``: each channel type's consent default; ``address_fields``:
        the directory field each sends to (both from the channel kinds:
        ``channels.transports.registry.consent_defaults`` and ``address_fields``)."""
        self.directory = directory
        self.address_fields = dict(address_fields or {})
        self.preferences = preferences or PreferencesModel()
        self.channel_types = tuple(dict.fromkeys(channel_types))  # the page's rows, in order
        self.defaults = dict(defaults or {})
        self.consent = consent
        self._secret = secret
        self._sink = sink
        self._token = callback_token
        self._wechat_token = wechat_token
        self._clock = clock

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/unsubscribe/{channel}", self.page)
        app.router.add_post("/unsubscribe/{channel}", self.unsubscribe)
        app.router.add_post("/inbound/sms/{provider}", self.inbound_sms)
        app.router.add_post("/inbound/wechat", self.wechat_event)
        app.router.add_get("/inbound/wechat", self.wechat_check)

    async def withdraw(self, user_id: str, channel_type: str, source: str) -> None:
        """Opt ``user_id`` out of marketing on ``channel_type`` and say so in the stream."""
        await self.record(user_id, channel_type, "marketing", False, source)

    async def record(self, user_id: str, channel_type: str, purpose: str, granted: bool,
                     source: str) -> ConsentRecord:
        """Store a consent change and put it in the stream (``unsubscribed`` /
        ``subscribed``, with the channel type, purpose and source)."""
        change = ConsentRecord(granted, self._clock(), source)
        await StreamedConsent(self.consent, self._sink).set(user_id, channel_type, purpose,
                                                            change)
        return change

    def _signed(self, request: web.Request) -> tuple[str, str]:
        channel = request.match_info["channel"]
        user_id = request.query.get("u", "")
        sig = request.query.get("s", "")
        expected = unsubscribe_signature(self._secret, user_id, channel)
        if not (self._secret and user_id and hmac.compare_digest(sig.encode(),
                                                                 expected.encode())):
            raise web.HTTPBadRequest(text="this unsubscribe link is not valid\n")
        return user_id, channel

    async def page(self, request: web.Request) -> web.Response:
        user_id, channel = self._signed(request)
        return await self._preferences(request, user_id, channel, None)

    async def unsubscribe(self, request: web.Request) -> web.Response:
        user_id, channel = self._signed(request)
        form = parse_qs((await request.read())[:_MAX_BODY].decode(errors="replace"))
        if form.get("List-Unsubscribe") == ["One-Click"]:
            await self.withdraw(user_id, channel, "one_click")
            return web.Response(text="unsubscribed\n")
        action = form.get("action", ["unsubscribe"])[0]
        if action not in ACTIONS:
            raise web.HTTPBadRequest(text=f"action must be one of {', '.join(ACTIONS)}\n")
        if action == RESUBSCRIBE:  # only the channel whose link this is
            await self.record(user_id, channel, "marketing", True, "preference_centre")
        elif action == ALL:
            for kind in dict.fromkeys((channel, *self.channel_types)):
                await self.withdraw(user_id, kind, "preference_centre")
        else:
            await self.withdraw(user_id, channel, "unsubscribe_link")
        return await self._preferences(request, user_id, channel, action)

    async def _preferences(self, request: web.Request, user_id: str, channel: str,
                           done: str | None) -> web.Response:
        contact = await self.directory.get(user_id)
        held = {k: r.granted for k, r in (await self.consent.all(user_id)).items()}
        model = self.preferences
        lang = pick_language(model, request.query.get("lang"),
                             contact.locale if contact else None,
                             request.headers.get("Accept-Language", ""))
        field_name = self.address_fields.get(channel)
        address = mask_address(channel, contact.address_of(field_name)
                               if contact is not None and field_name is not None else None)
        rows = consent_states(tuple(dict.fromkeys((channel, *self.channel_types))), held,
                              self.defaults)
        page = render_page(model, lang, channel, address, rows, request.path_qs, done)
        return web.Response(text=page.body, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": page.csp,
                                     "Content-Language": lang})

    def _check_token(self, request: web.Request) -> None:
        if not token_matches(callback_token(request.headers), self._token):
            raise web.HTTPUnauthorized(text="bad token", headers={"WWW-Authenticate": "Bearer"})

    async def inbound_sms(self, request: web.Request) -> web.Response:
        self._check_token(request)
        raw = (await request.read())[:_MAX_BODY]
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be an object"}, status=400)
        phone = next((str(body[k]) for k in ("from", "mobile", "phone") if body.get(k)), "")
        text = next((str(body[k]) for k in ("text", "content", "message") if body.get(k)), "")
        if not phone:
            return web.json_response({"error": "no sender number (from)"}, status=400)
        if not is_opt_out(text):
            return web.json_response({"opted_out": False})
        user_id = await self.directory.find("phone", phone)
        if user_id is None:  # nobody we know: keep the number off every future list
            await self.consent.do_not_contact([address_hash("phone", phone)], self._clock(),
                                              "sms_reply")
        else:
            await self.withdraw(user_id, "sms", "sms_reply")
        return web.json_response({"opted_out": True, "known_user": user_id is not None})

    def _wechat_signed(self, request: web.Request) -> None:
        q = request.query
        parts = sorted([self._wechat_token or "", q.get("timestamp", ""), q.get("nonce", "")])
        expected = hashlib.sha1("".join(parts).encode(), usedforsecurity=False).hexdigest()
        if not self._wechat_token or not hmac.compare_digest(
                q.get("signature", "").encode(), expected.encode()):
            raise web.HTTPUnauthorized(text="bad signature")

    async def wechat_check(self, request: web.Request) -> web.Response:
        """WeChat's server check: echo ``echostr`` when the signature holds."""
        self._wechat_signed(request)
        return web.Response(text=request.query.get("echostr", ""))

    async def wechat_event(self, request: web.Request) -> web.Response:
        self._wechat_signed(request)
        body = (await request.read())[:_MAX_BODY].decode(errors="replace")
        openid, kind, event = (_xml_field(body, f) for f in ("FromUserName", "MsgType", "Event"))
        if openid and kind == "event" and event.lower() == "unsubscribe":
            user_id = await self.directory.find("openid", openid)
            if user_id is not None:
                await self.withdraw(user_id, "wechat", "wechat_event")
        return web.Response(text="success")  # WeChat retries anything else


def _xml_field(body: str, name: str) -> str:
    # WeChat's flat event XML; a regex keeps any XML parser (and its
    # entity-expansion risks) away from untrusted input.
    match = re.search(_XML_FIELD.format(re.escape(name)), body, re.S)
    if match is None:
        return ""
    return (match.group(1) if match.group(1) is not None else match.group(2)).strip()

