"""TikTok's ``/open_api/v1.3/segment/mapping/``: header ``Access-Token``;
``{"advertiser_ids", "action", "id_schema", "batch_data"}``; HTTP 200 with
``{"code", "message", "request_id", "data"}`` (code 0: OK, 40100: too many
requests, 40001/40002: bad parameters, 40105: bad token); also plain 429s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.adplatforms.base import HEX64, FakePlatform

PATH = "/open_api/v1.3/segment/mapping/"


def answer(code: int, message: str, status: int = 200,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, content_type="application/json", headers=headers,
                        body=orjson.dumps({"code": code, "message": message,
                                           "request_id": "2026120712000001", "data": {}}))


@dataclass
class FakeTikTok(FakePlatform):
    token: str = "tiktok-token"
    advertiser: str = "7000000000000000001"
    audiences: set[str] = field(default_factory=lambda: {"1700000001"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await self._record(request)
        if request.method != "POST" or request.path != PATH:
            return answer(40001, "Invalid request path", 404)
        if request.headers.get("Access-Token") != self.token:
            return answer(40105, "The access token is invalid or has expired.")
        if self.storm.hit():
            if self.storm.throttled % 2:
                return answer(40100, "Too many requests. Please retry in some time.")
            return answer(40100, "Too many requests.", 429, {"Retry-After": "0"})
        try:
            body: Any = orjson.loads(raw)
            schema = body["id_schema"]
            assert body["advertiser_ids"] == [self.advertiser]
            assert body["action"] in ("add", "delete")
            assert schema == ["EMAIL_SHA256", "PHONE_SHA256"]
            rows = []
            audience = None
            for user in body["batch_data"]:
                assert isinstance(user, list) and len(user) == len(schema)
                values = []
                for item in user:
                    if item == {}:
                        values.append("")
                        continue
                    assert HEX64.match(item["id"]) and len(item["audience_ids"]) == 1
                    audience = item["audience_ids"][0]
                    assert audience in self.audiences
                    values.append(item["id"])
                assert any(values)
                rows.append((values[0], values[1]))
            assert rows and audience is not None
        except (KeyError, TypeError, AssertionError, orjson.JSONDecodeError):
            return answer(40002, "Invalid params")
        self.apply(audience, "add" if body["action"] == "add" else "remove", rows)
        return answer(0, "OK")
