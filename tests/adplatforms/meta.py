"""Meta's ``/{custom_audience_id}/users`` (POST adds, DELETE removes) as the
Marketing API documents it: form fields ``payload``, ``session``,
``access_token``; Graph error bodies; throttling as HTTP 429 and as a 400
with code 80003 (custom audience rate limit)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from tests.adplatforms.base import HEX64, FakePlatform

_PATH = re.compile(r"^/v\d+\.\d+/(\d+)/users$")
SCHEMA = ["EMAIL_SHA256", "PHONE_SHA256"]


def graph_error(status: int, code: int, message: str, subcode: int | None = None,
                kind: str = "OAuthException", headers: dict[str, str] | None = None,
                ) -> web.Response:
    error: dict[str, Any] = {"message": message, "type": kind, "code": code,
                             "fbtrace_id": "AbCdEf123"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return web.Response(status=status, body=orjson.dumps({"error": error}),
                        content_type="application/json", headers=headers)


@dataclass
class FakeMeta(FakePlatform):
    token: str = "meta-token"
    audiences: set[str] = field(default_factory=lambda: {"2385000001"})
    sessions: dict[tuple[int, int], int] = field(default_factory=dict)  # (session, seq) -> n

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await self._record(request)
        found = _PATH.match(request.path)
        if request.method not in ("POST", "DELETE") or found is None:
            return graph_error(400, 100, "Unsupported request", kind="GraphMethodException")
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if form.get("access_token") != self.token:
            return graph_error(400, 190, "Invalid OAuth access token - Cannot parse access token")
        if self.storm.hit():
            if self.storm.throttled % 2:
                return graph_error(429, 80003, "There have been too many calls to this "
                                   "ad-account. Wait a bit and try again.",
                                   headers={"Retry-After": "0"})
            return graph_error(400, 80003, "There have been too many calls to this ad-account.")
        audience = found.group(1)
        if audience not in self.audiences:
            return graph_error(400, 100, f"Unsupported post request. Object with ID "
                               f"'{audience}' does not exist", 33, "GraphMethodException")
        try:
            payload = orjson.loads(form["payload"])
            session = orjson.loads(form["session"])
            rows = [tuple(row) for row in payload["data"]]
            schema = payload["schema"]
            assert schema == SCHEMA or schema in SCHEMA
            width = len(schema) if isinstance(schema, list) else 1
            assert 0 < len(rows) <= 10_000
            assert all(len(r) == width and all(v == "" or HEX64.match(v) for v in r)
                       and any(r) for r in rows)
            key = (int(session["session_id"]), int(session["batch_seq"]))
            assert isinstance(session["last_batch_flag"], bool)
        except (KeyError, ValueError, TypeError, AssertionError, orjson.JSONDecodeError):
            return graph_error(400, 100, "Invalid parameter", 1870053)
        if key not in self.sessions:  # Meta de-duplicates a session's batch sent again
            self.sessions[key] = len(rows)
            self.apply(audience, "add" if request.method == "POST" else "remove",
                       [(str(r[0]), str(r[1])) for r in rows])
        return web.json_response({"audience_id": audience, "session_id": str(key[0]),
                                  "num_received": len(rows), "num_invalid_entries": 0,
                                  "invalid_entry_samples": {}})
