"""Expiring inbox tokens on ``serve`` against a real Redis (docs/security.md,
"Inbox tokens"): ``Authorization: Bearer EXP.SIG``,
``SIG = hex(HMAC-SHA256(secret, "inbox\\n" + user + "\\n" + EXP))``, computed
here with hmac/hashlib, never through the project's function. Each forgery
or stale token is refused with the slots' reason on GET and on POST ack and
reads or acks nothing; the old never-expiring token only with the
compatibility switch, counted either way."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from redis.asyncio import Redis

from channels.base import Message
from channels.feedback.events import ListSink
from channels.transports.inbox import InboxStore
from config.loader import load_config_text
from scenetrigger.cli.run.serve import ServeParts, build_app
from tests.channels.receivers import serve_app

CLI = Path(sys.executable).with_name("scenetrigger")
SECRET = "inbox-secret-for-token-tests"
ADMIN = "admin-token-for-token-tests"
MAX_TTL_S = 86_400  # docs/security.md: exp at most one day ahead of serve's clock

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def sig(user: str, exp: int, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"inbox\n{user}\n{exp}".encode(),
                    hashlib.sha256).hexdigest()


def old_token(user: str, secret: str = SECRET) -> str:
    """The token shops minted before: hex(HMAC-SHA256(secret, user)), no expiry."""
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


@asynccontextmanager
async def inbox_server(url: str, legacy: bool) -> AsyncIterator[tuple[str, str, Any]]:
    run = uuid.uuid4().hex[:8]
    config = load_config_text(f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery: {{redis_prefix: "it{run}:"}}
channels:
  inbox: {{type: inbox, key_prefix: "it{run}:inbox"}}
""")
    client = Redis.from_url(url)
    # the slot secret is the inbox secret on purpose: the prefixes keep them apart
    env = {"SCENETRIGGER_INBOX_SECRET": SECRET, "SCENETRIGGER_SLOT_SECRET": SECRET,
           "SCENETRIGGER_ADMIN_TOKENS": f"ops={ADMIN}"}
    store = InboxStore(client, f"it{run}:inbox")
    for user in ("victim", "attacker"):
        assert await store.add(Message(f"m-{user}", f"t-{user}", user, "promo_arrival",
                                       "inbox", f"private to {user}", "body", None, {},
                                       1_700_000_000_000))
    app = build_app(ServeParts(config, client, ListSink(), env=env, tags_prefix=f"it{run}:",
                               inbox_legacy_tokens=legacy))
    try:
        async with serve_app(app) as base:
            yield base, run, client
    finally:
        await client.aclose()


async def both(http: aiohttp.ClientSession, base: str, user: str,
               token: str | None) -> list[tuple[int, Any]]:
    """(status, body) of GET /inbox/{user} and of POST /inbox/{user}/ack."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"{base}/inbox/{quote(user, safe='')}"
    out = []
    for call in (http.get(url, headers=headers),
                 http.post(url + "/ack", headers=headers, json={"ids": [f"m-{user}"]})):
        async with call as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            if resp.status in (400, 403):
                assert resp.headers["Cache-Control"] == "no-store"
            out.append((resp.status, body))
    return out


async def legacy_counts(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    found = re.findall(r'scenetrigger_inbox_legacy_tokens_total\{outcome="(\w+)"\} (\S+)', text)
    return {outcome: float(n) for outcome, n in found}


async def unread(http: aiohttp.ClientSession, base: str, user: str) -> list[str]:
    async with http.get(f"{base}/inbox/{user}",
                        headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200
        return [m["message_id"] for m in (await resp.json())["messages"]]


async def test_each_forged_or_stale_token_is_refused_with_its_reason(redis_url: str) -> None:
    async with inbox_server(redis_url, legacy=False) as (base, _run, _client), \
            aiohttp.ClientSession() as http:
        now = int(time.time())
        exp = now + 3600
        good = sig("victim", exp)
        slot_sig = hmac.new(SECRET.encode(), f"slot\nvictim\n{exp}".encode(),
                            hashlib.sha256).hexdigest()
        cases: dict[str, tuple[str, int, str]] = {
            "cross-user": (f"{exp}.{sig('attacker', exp)}", 403, "bad_sig"),
            "truncated": (f"{exp}.{good[:32]}", 403, "bad_sig"),
            "one char short": (f"{exp}.{good[:-1]}", 403, "bad_sig"),
            "bad sig": (f"{exp}.{'0' * 64}", 403, "bad_sig"),
            "no sig": (f"{exp}.", 403, "bad_sig"),
            "wrong secret": (f"{exp}.{sig('victim', exp, 'another-secret')}", 403, "bad_sig"),
            "exp moved later": (f"{exp + 60}.{good}", 403, "bad_sig"),
            "the slot's signature": (f"{exp}.{slot_sig}", 403, "bad_sig"),
            "expired": (f"{now - 5}.{sig('victim', now - 5)}", 403, "expired"),
            "long expired": (f"1.{sig('victim', 1)}", 403, "expired"),
            "exp too far": (f"{now + MAX_TTL_S + 120}.{sig('victim', now + MAX_TTL_S + 120)}",
                            403, "exp_too_far"),
            "exp missing": (f".{good}", 400, "exp_missing"),
            "old token, no switch": (old_token("victim"), 400, "exp_missing"),
            "not a token": ("nope", 400, "exp_missing"),
            "negative exp": (f"-{exp}.{sig('victim', -exp)}", 400, "exp_malformed"),
            "exp with a sign": (f"+{exp}.{good}", 400, "exp_malformed"),
            "exp not a number": (f"{exp}x.{good}", 400, "exp_malformed"),
        }
        for name, (token, status, reason) in cases.items():
            for got, body in await both(http, base, "victim", token):
                assert got == status, (name, got, body)
                assert body["reason"] == reason and body["error"], (name, body)
                assert "private" not in str(body), name
        for header in ({}, {"Authorization": f"Basic {good}"}, {"Authorization": "Bearer "}):
            async with http.get(f"{base}/inbox/victim", headers=header) as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        # the old token's refusal says what it is and where the switch is
        assert "--inbox-legacy-tokens" in (await both(http, base, "victim",
                                                      old_token("victim")))[0][1]["error"]
        assert "--inbox-legacy-tokens" not in (await both(http, base, "victim",
                                                          "nope"))[0][1]["error"]
        assert await unread(http, base, "victim") == ["m-victim"]  # no refused ack took
        # The old token was presented with the right signature twice per route.
        assert await legacy_counts(http, base) == {"refused": 4.0}

        # The victim's own token, just minted or valid nearly a day more, reads and acks.
        seen = []
        for ahead in (60, MAX_TTL_S - 60):  # from the clock now: the test took seconds so far
            exp = int(time.time()) + ahead
            token = f"{exp}.{sig('victim', exp)}"
            (get_status, listed), (ack_status, acked) = await both(http, base, "victim", token)
            assert get_status == 200 and ack_status == 200, ahead
            seen.append(([m["message_id"] for m in listed["messages"]], acked))
        assert seen == [(["m-victim"], {"acked": 1}), ([], {"acked": 0})]  # read, then acked
        assert await unread(http, base, "victim") == []
        assert await unread(http, base, "attacker") == ["m-attacker"]


async def test_the_old_token_only_with_the_switch_and_counted(redis_url: str) -> None:
    async with inbox_server(redis_url, legacy=True) as (base, _run, _client), \
            aiohttp.ClientSession() as http:
        exp = int(time.time()) + 3600
        # the old token of another user, or of another secret: still refused
        for token in (old_token("attacker"), old_token("victim", "another-secret"),
                      old_token("victim")[:32]):
            for got, body in await both(http, base, "victim", token):
                assert (got, body["reason"]) == (400, "exp_missing"), token
        # an id that is "inbox\n" + victim + "\n" + exp: the victim's new signature
        # is that id's old token, and must not open that id's inbox
        odd = f"inbox\nvictim\n{exp}"
        assert old_token(odd) == sig("victim", exp)
        for got, body in await both(http, base, odd, sig("victim", exp)):
            assert (got, body["reason"]) == (400, "exp_missing")
        assert await legacy_counts(http, base) == {}  # none of those was a right old token
        (get_status, listed), (ack_status, acked) = await both(http, base, "victim",
                                                               old_token("victim"))
        assert (get_status, ack_status) == (200, 200)
        assert [m["message_id"] for m in listed["messages"]] == ["m-victim"]
        assert acked == {"acked": 1}
        assert await legacy_counts(http, base) == {"accepted": 2.0}
        # the new token works beside it, and the expiry still holds for it
        assert [s for s, _ in await both(http, base, "attacker",
                                         f"{exp}.{sig('attacker', exp)}")] == [200, 200]
        past = int(time.time()) - 1
        assert [(s, b["reason"]) for s, b in await both(
            http, base, "attacker", f"{past}.{sig('attacker', past)}")] == [(403, "expired")] * 2


async def test_serve_takes_the_switch_from_its_command_line(redis_url: str,
                                                           tmp_path: Path) -> None:
    """``serve --inbox-legacy-tokens`` warns at start and accepts the old token."""
    run = uuid.uuid4().hex[:8]
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery: {{redis_prefix: "ic{run}:"}}
channels:
  inbox: {{type: inbox, key_prefix: "ic{run}:inbox"}}
""")
    env = {**{k: v for k, v in os.environ.items() if "TOKEN" not in k and "SECRET" not in k},
           "SCENETRIGGER_INBOX_SECRET": SECRET, "SCENETRIGGER_TRACKING_SECRET": "t",
           "SCENETRIGGER_HASH_KEY": "test-hash-key"}
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "serve", "--port", "0", "--config", str(cfg), "--redis-url", redis_url,
        "--inbox-legacy-tokens", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        before: list[str] = []
        while "scenetrigger serve: http://" not in (line := (await asyncio.wait_for(
                proc.stderr.readline(), 60)).decode()):
            assert line, before
            before.append(line)
        assert any("--inbox-legacy-tokens" in b and "never expire" in b for b in before), before
        base = line.split()[2].rstrip("/")
        async with aiohttp.ClientSession() as http:
            assert [s for s, _ in await both(http, base, "u1", old_token("u1"))] == [200, 200]
            assert await legacy_counts(http, base) == {"accepted": 2.0}
    finally:
        proc.terminate()
        await proc.wait()
