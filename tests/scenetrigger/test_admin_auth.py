"""The one HTTP admin check (channels/admin_auth.py): the user directory's
routes refuse on their own, in an app that holds nothing else (no other
route set up a token for them), and every token is compared."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from channels.admin_auth import admin_name, require_admin
from channels.audience.consent import ConsentRecord, MemoryConsentStore
from channels.audience.directory import Contact, MemoryDirectory
from config.tokens import AdminTokens
from scenetrigger.ops.user_admin import UserAdmin

ADMIN = "admin-token-for-tests"
# (method, path, body) of every admin route of UserAdmin.
ROUTES = [("GET", "/users/ann", None), ("PUT", "/users/ann", {"email": "a@example.com"}),
          ("PATCH", "/users/ann", {"locale": "zh-CN"}), ("DELETE", "/users/ann", None),
          ("PUT", "/users/ann/consent/email", {"granted": False})]
IDENTIFY = [("POST", "/users/identify", {"anonymous_id": "a1", "user_id": "ann"}),
            ("POST", "/identify", {"anonymous_id": "a1", "user_id": "ann"})]


class Calls:
    def __init__(self) -> None:
        self.erased: list[str] = []
        self.consents: list[tuple[str, str, bool]] = []
        self.published: list[dict[str, Any]] = []

    async def erase(self, user_id: str) -> dict[str, Any]:
        self.erased.append(user_id)
        return {"user_id": user_id}

    async def record(self, user_id: str, channel: str, purpose: str, granted: bool,
                     source: str) -> ConsentRecord:
        self.consents.append((user_id, channel, granted))
        return ConsentRecord(granted, 1, source)

    async def publish(self, event: dict[str, Any]) -> None:
        self.published.append(event)


def user_admin_app(tokens: AdminTokens, calls: Calls) -> web.Application:
    directory = MemoryDirectory()
    directory.users["ann"] = Contact("ann")
    app = web.Application()
    UserAdmin(directory, MemoryConsentStore(), calls.erase, calls.record, calls.publish,
              tokens=tokens).add_routes(app)
    return app


async def _status(client: TestClient[Any, Any], method: str, path: str, body: Any,
                  token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    resp = await client.request(method, path, json=body, headers=headers)
    return resp.status


async def test_user_admin_routes_refuse_everything_without_a_configured_token() -> None:
    calls = Calls()
    async with TestClient(TestServer(user_admin_app(AdminTokens(), calls))) as client:
        for method, path, body in ROUTES + IDENTIFY:
            for token in (None, "", ADMIN, "x"):
                assert await _status(client, method, path, body, token) == 403, (method, path)
    assert (calls.erased, calls.consents, calls.published) == ([], [], [])


async def test_user_admin_routes_need_the_admin_token_on_their_own() -> None:
    calls = Calls()
    tokens = AdminTokens.single(ADMIN)
    async with TestClient(TestServer(user_admin_app(tokens, calls))) as client:
        for method, path, body in ROUTES:
            assert await _status(client, method, path, body, None) == 401, (method, path)
            assert await _status(client, method, path, body, "nope") == 401, (method, path)
            assert await _status(client, method, path, body, ADMIN[:-1]) == 401, (method, path)
        for method, path, body in IDENTIFY:  # identify answers 403 for any other credential
            assert await _status(client, method, path, body, "nope") == 403, (method, path)
        assert (calls.erased, calls.consents, calls.published) == ([], [], [])
        for method, path, body in ROUTES + IDENTIFY:
            assert await _status(client, method, path, body, ADMIN) in (200, 202), (method, path)
    assert calls.erased == ["ann"] and calls.consents == [("ann", "email", False)]
    assert len(calls.published) == 2


def test_every_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # what config.tokens calls
    tokens = AdminTokens((("ops", "first-token"), ("ci", "second-token")))
    request: Any = type("Request", (), {"headers": {"Authorization": "Bearer first-token"}})()
    assert require_admin(tokens, request) == "ops"
    assert compared == [b"first-token", b"second-token"]
    compared.clear()
    request.headers = {"Authorization": "Bearer second-token"}
    assert admin_name(tokens, request) == "ci"
    assert compared == [b"first-token", b"second-token"]
    with pytest.raises(web.HTTPForbidden):
        require_admin(AdminTokens(), request)
    request.headers = {"Authorization": "Bearer third"}
    with pytest.raises(web.HTTPUnauthorized):
        require_admin(tokens, request)
