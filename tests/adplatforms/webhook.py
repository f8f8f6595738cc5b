"""A receiver of the audience webhook: checks the signature with hmac
directly (``sha256=HMAC(secret, "<timestamp>." + body)``), keeps one copy
per ``Idempotency-Key``, answers 429 in a storm."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from tests.adplatforms.base import FakePlatform


@dataclass
class FakeHook(FakePlatform):
    secret: bytes = b"hook-secret"
    bad_signatures: int = 0
    seen: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        stamp = request.headers.get("X-Scenetrigger-Timestamp", "")
        want = "sha256=" + hmac.new(self.secret, stamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, request.headers.get("X-Scenetrigger-Signature", "")):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        if self.storm.hit():
            return web.json_response({"error": "slow down"}, status=429,
                                     headers={"Retry-After": "0"})
        data = orjson.loads(body)
        key = request.headers["Idempotency-Key"]
        if key not in self.seen:
            self.seen.add(key)
            rows = [(m["email_sha256"] or "", m["phone_sha256"] or "") for m in data["members"]]
            self.apply(data["audience"], data["op"], rows)
        return web.json_response({"accepted": len(data["members"])})
