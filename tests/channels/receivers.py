"""Real loopback servers for channel tests: a scriptable webhook receiver
that verifies signatures, a fake HTTP provider, and an SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiohttp import web

from channels.base import Message
from channels.transports.webhook import verify_signature

HANG = "hang"  # a scripted answer that never comes (the client times out)


@dataclass
class Recorded:
    method: str
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


@dataclass
class Receiver:
    """Answers from ``script`` in order (an int status, ``(status, headers,
    body)`` or :data:`HANG`), then ``default``; records every request."""

    secret: bytes = b"test-secret"
    script: list[Any] = field(default_factory=list)
    default: Any = 200
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    base: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ok = verify_signature(self.secret, request.headers.get("X-Scenetrigger-Timestamp"),
                              request.headers.get("X-Scenetrigger-Signature"), body)
        self.requests.append(Recorded(request.method, request.path, request.raw_path,
                                      dict(request.query),
                                      dict(request.headers), body, ok))
        answer = self.script.pop(0) if self.script else self.default
        if answer == HANG:
            await asyncio.sleep(3600)
        if isinstance(answer, tuple):
            status, headers, payload = answer
            return web.Response(status=status, headers=headers, body=payload)
        return web.Response(status=int(answer), text="ok" if int(answer) < 300 else "no")

    @property
    def ok_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.signature_ok]


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def running_receiver(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    async with serve_app(app) as base:
        receiver.base = base
        receiver.url = base + "/hook"
        yield receiver


def message(n: int = 1, **changes: Any) -> Message:
    values: dict[str, Any] = {
        "message_id": f"m-{n}", "trigger_id": f"t-{n}", "user_id": f"u{n}",
        "scene": "cart_abandonment", "channel": "crm", "subject": "Still thinking?",
        "text": "Your cart misses you", "html": "<p>Your cart misses you</p>",
        "data": {"email": "ann@example.com", "phone": "+8613800000000"},
        "created_ms": 1_700_000_000_000,
    }
    values.update(changes)
    return Message(**values)


@dataclass
class SmtpSink:
    """aiosmtpd handler collecting messages; ``rcpt_script`` answers RCPT TO."""

    rcpt_script: list[str] = field(default_factory=list)
    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # the DATA bytes as they arrived

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.rcpt_script:
            answer = self.rcpt_script.pop(0)
            if not answer.startswith("250"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(bytes(envelope.original_content or envelope.content))
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"
