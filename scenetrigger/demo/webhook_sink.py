"""The demo's webhook receiver: ``POST /hook`` as a real endpoint would do it.

It verifies the HMAC signature over the raw body
(:func:`channels.transports.webhook.verify_signature`, 401 when it does not match),
ignores a message id it has already taken (delivery is at-least-once) and
keeps the last messages for the live page. Batches (``{"messages": [...]}``)
are taken whole.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from channels.transports.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from config.clock import wall_ms
from scenetrigger.serve.site import start_site

log = logging.getLogger("scenetrigger.demo.webhook_sink")

HOOK_PATH = "/hook"
_SEEN_MAX = 100_000  # message ids remembered for duplicate detection


@dataclass(frozen=True, slots=True)
class Received:
    received_ms: int
    message: dict[str, Any]  # the message as the webhook posted it (channels/transports/wire.py)


class WebhookSink:
    """Counts and keeps what arrived with a valid signature (``keep`` newest)."""

    def __init__(self, secrets: Iterable[bytes], keep: int = 100) -> None:
        self.secrets = tuple(secrets)
        self.recent: deque[Received] = deque(maxlen=keep)
        self.received = 0  # distinct message ids taken
        self.rejected = 0  # requests refused: bad signature or body
        self.duplicates = 0  # message ids posted again
        self._seen: OrderedDict[str, None] = OrderedDict()

    def verified(self, request: web.Request, body: bytes) -> bool:
        stamp = request.headers.get(TIMESTAMP_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        return any(verify_signature(secret, stamp, signature, body) for secret in self.secrets)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.verified(request, body):
            self.rejected += 1
            log.warning("webhook sink: bad signature", extra={"remote": request.remote})
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.rejected += 1
            return web.json_response({"error": "body is not JSON"}, status=400)
        messages = payload.get("messages") if isinstance(payload, dict) else None
        batch = messages if isinstance(messages, list) else [payload]
        if not all(isinstance(m, dict) and isinstance(m.get("message_id"), str)
                   for m in batch):
            self.rejected += 1
            return web.json_response({"error": "not a message"}, status=400)
        now = wall_ms()
        for message in batch:
            self._take(message, now)
        return web.json_response({"ok": True, "messages": len(batch)})

    def _take(self, message: dict[str, Any], now_ms: int) -> None:
        message_id = message["message_id"]
        if message_id in self._seen:
            self.duplicates += 1
            return
        self._seen[message_id] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        self.received += 1
        self.recent.appendleft(Received(now_ms, message))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(HOOK_PATH, self.handle)
        return app


@dataclass(frozen=True, slots=True)
class ServedSink:
    runner: web.AppRunner
    url: str  # http://host:port/hook with the port actually bound


async def serve_sink(sink: WebhookSink, host: str, port: int) -> ServedSink:
    """Start the sink on ``host:port`` (0: a free port)."""
    runner, base = await start_site(sink.app(), host, port)
    return ServedSink(runner, f"{base}{HOOK_PATH}")
