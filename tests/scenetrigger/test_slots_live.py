"""``GET /slots/{slot}`` on ``serve`` against a real Redis (and a real Redis
Cluster): the variant each visitor gets from the live profile and tags the
worker writes, the default for an unknown or unsigned visitor, 404, 403, 503
when Redis is away; impressions and clicks as feedback events that the
funnel report counts; what a browser cannot do (docs/security.md,
"On-site slots")."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest

from channels.audience.live_profile import LiveProfileStore
from channels.content.catalog import MemoryCatalog
from channels.feedback.events import ListSink, MessageMeta, RedisMessageIndex
from channels.redis_client import redis_client
from config.loader import load_config_text
from config.tokens import SLOT_SECRET_ENV
from scenetrigger.cli.run.serve import ServeParts, build_app
from scenetrigger.ops.erasure import Eraser
from strategies.reporting import build_report, options_of
from strategies.store import RedisTagStore
from tests.channels.content_factories import PHONE, PHONES, T0, catalog_products, user_state
from tests.channels.receivers import serve_app
from tests.channels.slot_fixtures import category_ids, config_text, hot_ids
from tests.services import RedisCluster
from triggers.events import Event

pytestmark = pytest.mark.integration
SLOT_SECRET, TRACKING = "slot-secret-for-tests", "tracking-secret-for-tests"
CALLBACK = "provider-callback-token-for-tests"
SERVED = """
  served:
    variants:
      - {name: deals, when: {style: [promo_driven]}, products: hot, subject: Deals, text: x}
    impressions: served
"""


def hexsig(user: str, exp: int, secret: str = SLOT_SECRET) -> str:
    """docs/security.md: hex(HMAC-SHA256(secret, "slot\\n" + user + "\\n" + str(exp)))."""
    message = f"slot\n{user}\n{exp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sig(user: str, ttl_s: int = 3600) -> str:
    """The ``exp=...&sig=...`` a shop page carries for ``user``, valid ``ttl_s`` more."""
    exp = int(time.time()) + ttl_s
    return f"exp={exp}&sig={hexsig(user, exp)}"


@asynccontextmanager
async def slot_server(url: str, demo: bool = False
                      ) -> AsyncIterator[tuple[str, Any, ListSink, str]]:
    prefix = f"sl{uuid.uuid4().hex[:6]}:"
    config = load_config_text(config_text(prefix, SERVED))
    client = redis_client(url)
    sink = ListSink()
    env = {SLOT_SECRET_ENV: SLOT_SECRET, config.delivery.tracking.secret_env: TRACKING,
           config.delivery.tracking.callback_token_env: CALLBACK}
    app = build_app(ServeParts(config, client, sink, env=env, tags_prefix=prefix,
                               slot_catalog=MemoryCatalog(catalog_products()), slots_demo=demo))
    try:
        async with serve_app(app) as base:
            yield base, client, sink, prefix
    finally:
        await client.aclose()


async def get(http: aiohttp.ClientSession, base: str, user: str, slot: str = "home",
              signature: str | None = None) -> tuple[int, Any, Any]:
    query = f"?user={quote(user, safe='')}" + (f"&{signature}" if signature else "")
    async with http.get(f"{base}/slots/{slot}{query}") as resp:
        return resp.status, await resp.json(), resp.headers


@pytest.mark.parametrize("where", ["node", "cluster"])
async def test_each_visitor_gets_their_variant_from_the_live_state(
        where: str, redis_url: str, redis_cluster: RedisCluster) -> None:
    async with slot_server(redis_url if where == "node" else redis_cluster.url) as (
            base, client, _sink, prefix), aiohttp.ClientSession() as http:
        profiles, tags = LiveProfileStore(client, prefix, ttl_s=300), RedisTagStore(client, prefix)
        cases = {"searcher": ("search_driven", [], [PHONE]),
                 "browser": ("category_browser", [], category_ids(PHONE, PHONES, 3)),
                 "bargain": ("promo_driven", [], hot_ids(2, PHONES)),
                 "vip": ("category_browser", ["vip"], hot_ids(1, PHONES))}
        expected_variant = {"searcher": "searcher", "browser": "new_in_category",
                            "bargain": "hot_deals", "vip": "vip_deal"}
        for user, (style, user_tags, _ids) in cases.items():
            assert await profiles.put(user, user_state(user, style).profile, T0)
            await tags.add(user, user_tags)
        for user, (_style, _tags, ids) in cases.items():
            status, body, headers = await get(http, base, user, signature=sig(user))
            assert status == 200 and body["known"], body
            assert body["variant"] == expected_variant[user]
            assert [p["id"] for p in body["products"]] == ids
            assert headers["Cache-Control"] == "private, max-age=30"
            assert body["impression"].startswith("/t/o/slot%3Ahome%3A")
        status, body, _ = await get(http, base, "stranger", signature=sig("stranger"))
        assert status == 200 and not body["known"] and body["title"] == "Welcome"
        status, body, _ = await get(http, base, "searcher", slot="nope", signature=sig("x"))
        assert status == 404 and "nope" in body["error"]


async def test_a_browser_reads_no_one_elses_slot_and_forges_no_clicks(redis_url: str) -> None:
    async with slot_server(redis_url) as (base, client, sink, prefix), \
            aiohttp.ClientSession() as http:
        victim = user_state("victim", "search_driven").profile
        victim.last_query = "a very private query"
        await LiveProfileStore(client, prefix).put("victim", victim, T0)
        # No signature: the default, whoever is named; nothing of the victim's.
        status, body, _ = await get(http, base, "victim")
        assert status == 200 and not body["known"] and body["title"] == "Welcome"
        assert body["impression"] is None and "private" not in str(body)
        # Another user's signature, or a made-up one: 403.
        exp = int(time.time()) + 3600
        for wrong in (sig("attacker"), f"exp={exp}&sig={'0' * 64}", f"exp={exp}&sig=x"):
            assert (await get(http, base, "victim", signature=wrong))[0] == 403
        # No CORS (as the collector): another origin's script cannot read an answer.
        async with http.get(f"{base}/slots/home?user=victim&{sig('victim')}",
                            headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 200
            assert not any(h.lower().startswith("access-control-") for h in resp.headers)
        # The victim's own page: their content, and a signed link per product.
        status, body, _ = await get(http, base, "victim", signature=sig("victim"))
        assert body["known"] and "a very private query" in body["title"]
        link = body["products"][0]["link"]
        path = urlsplit(link).path
        # A click link for the victim with another target, or a made-up impression
        # of theirs to an allow-listed host: refused, nothing recorded.
        forged = [link.replace(quote("https://shop.example.com/p/", safe=""),
                               quote("https://evil.example/p/", safe="")),
                  f"{path}?u={quote('https://shop.example.com/x', safe='')}",
                  f"/t/c/{quote('slot:home:searcher:1:victim', safe='')}"
                  f"?u={quote('https://shop.example.com/x', safe='')}"]
        for url in forged:
            async with http.get(base + url, allow_redirects=False) as resp:
                # an allow-listed host still redirects (documented): it counts nothing
                assert resp.status == (400 if "evil" in url else 302)
        assert [e.kind for e in sink.events] == []
        # The real click: a redirect to the product, one clicked event, once.
        for _ in range(2):
            async with http.get(base + link, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == f"https://shop.example.com/p/{PHONE}"
        assert [(e.kind, e.user_id, e.slot, e.variant) for e in sink.events] == [
            ("clicked", "victim", "home", "searcher")]


async def test_a_provider_callback_cannot_report_on_a_slot_impression(redis_url: str) -> None:
    # The callback token is a provider's: it reports on messages that provider
    # sent. A slot impression id is made of its parts, so a made-up one names
    # any visitor; only serve's signed pixel and click may record it.
    async with slot_server(redis_url) as (base, client, sink, prefix), \
            aiohttp.ClientSession() as http:
        await RedisMessageIndex(client, prefix).remember(
            "m-sms-1", MessageMeta("victim", "cart", "sms"))  # a message a provider sent
        auth = {"Authorization": f"Bearer {CALLBACK}"}
        made_up = f"slot:home:hot_deals:{T0}:victim"
        forged = [{"message_id": made_up, "status": status}
                  for status in ("delivered", "opened", "clicked", "shared", "converted")]
        async with http.post(f"{base}/callbacks/sms", json=forged, headers=auth) as resp:
            assert (resp.status, (await resp.json())["accepted"]) == (200, 0)
        assert sink.events == []
        assert [k async for k in client.scan_iter(match=f"{prefix}once:*")] == []
        # The same request for the provider's own message is taken.
        async with http.post(f"{base}/callbacks/sms", headers=auth, json=[
                *forged, {"message_id": "m-sms-1", "status": "shared"}]) as resp:
            assert (resp.status, (await resp.json())["accepted"]) == (200, 1)
        assert [(e.kind, e.user_id, e.message_id, e.slot) for e in sink.events] == [
            ("shared", "victim", "m-sms-1", None)]


async def test_the_signature_covers_user_and_exp_and_runs_out(redis_url: str) -> None:
    """docs/security.md, "What is signed": each forgery or stale signature is
    refused with its reason and reads nothing of the victim's."""
    async with slot_server(redis_url) as (base, client, sink, prefix), \
            aiohttp.ClientSession() as http:
        victim = user_state("victim", "search_driven").profile
        victim.last_query = "a very private query"
        await LiveProfileStore(client, prefix).put("victim", victim, T0)
        now = int(time.time())
        exp = now + 3600
        good = hexsig("victim", exp)
        max_ttl = 86_400  # docs/security.md: exp at most one day ahead
        cases = {
            "cross-user": (f"exp={exp}&sig={hexsig('attacker', exp)}", 403, "bad_sig"),
            "truncated": (f"exp={exp}&sig={good[:32]}", 403, "bad_sig"),
            "one char short": (f"exp={exp}&sig={good[:-1]}", 403, "bad_sig"),
            "bad sig": (f"exp={exp}&sig={'0' * 64}", 403, "bad_sig"),
            "not hex": (f"exp={exp}&sig=%C3%A9{good[2:]}", 403, "bad_sig"),
            "wrong key": (f"exp={exp}&sig={hexsig('victim', exp, 'another-secret')}", 403,
                          "bad_sig"),
            "exp moved later": (f"exp={exp + 60}&sig={good}", 403, "bad_sig"),
            "exp zero-padded": (f"exp=0{exp}&sig={good}", 200, None),  # the same number
            "the old formula": (f"exp={exp}&sig=" + hmac.new(
                SLOT_SECRET.encode(), b"slot\nvictim", hashlib.sha256).hexdigest(), 403,
                "bad_sig"),
            "expired": (f"exp={now - 5}&sig={hexsig('victim', now - 5)}", 403, "expired"),
            "long expired": (f"exp=1&sig={hexsig('victim', 1)}", 403, "expired"),
            "too far ahead": (f"exp={now + max_ttl + 120}&sig="
                              f"{hexsig('victim', now + max_ttl + 120)}", 403, "exp_too_far"),
            "no exp": (f"sig={hexsig('victim', exp)}", 400, "exp_missing"),
            "empty exp": (f"exp=&sig={good}", 400, "exp_missing"),
            "negative exp": (f"exp=-{exp}&sig={hexsig('victim', -exp)}", 400, "exp_malformed"),
            "exp with a sign": (f"exp=%2B{exp}&sig={good}", 400, "exp_malformed"),
            "exp not a number": (f"exp={exp}x&sig={good}", 400, "exp_malformed"),
        }
        for name, (query, status, reason) in cases.items():
            got, body, headers = await get(http, base, "victim", signature=query)
            assert got == status, (name, body)
            if reason is None:
                assert body["known"] and "a very private query" in body["title"], name
                continue
            assert body["reason"] == reason and body["error"], (name, body)
            assert "private" not in str(body) and headers["Cache-Control"] == "no-store"
        # Nearly a day ahead is accepted (a page open all day); the victim's own.
        for ahead in (60, max_ttl - 60):  # from the clock now: the test took seconds so far
            exp = int(time.time()) + ahead
            status, body, _ = await get(http, base, "victim", signature=(
                f"exp={exp}&sig={hexsig('victim', exp)}"))
            assert status == 200 and body["known"], ahead
        assert sink.events == []  # a refusal records no impression


async def test_the_demo_page_is_served_only_when_asked(redis_url: str) -> None:
    async with slot_server(redis_url) as (base, *_), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/slots-demo.html?user=ann&{sig('ann')}") as resp:
            assert resp.status == 404  # a default serve: no demo page on a shop's host
        async with http.get(f"{base}/slots.js") as resp:
            assert resp.status == 200  # the snippet itself always
    async with slot_server(redis_url, demo=True) as (base, *_), \
            aiohttp.ClientSession() as http, http.get(f"{base}/slots-demo.html") as resp:
        assert resp.status == 200 and "data-scenetrigger-slot" in await resp.text()


async def test_without_the_slot_secret_unsigned_gets_the_default_and_signed_403(
        redis_url: str) -> None:
    """docs/security.md: with $SCENETRIGGER_SLOT_SECRET unset no signature
    can be checked: an unsigned request gets the default, a signed one 403
    (closed, as every route whose secret is not configured)."""
    prefix = f"sl{uuid.uuid4().hex[:6]}:"
    config = load_config_text(config_text(prefix))
    client = redis_client(redis_url)
    try:
        await LiveProfileStore(client, prefix).put(
            "ann", user_state("ann", "promo_driven").profile, T0)
        app = build_app(ServeParts(config, client, ListSink(), env={}, tags_prefix=prefix,
                                   slot_catalog=MemoryCatalog(catalog_products())))
        async with serve_app(app) as base, aiohttp.ClientSession() as http:
            status, body, _ = await get(http, base, "ann")
            assert status == 200 and not body["known"] and body["title"] == "Welcome"
            assert (await get(http, base, "ann", signature=sig("ann")))[0] == 403
    finally:
        await client.aclose()


async def test_beacon_and_served_impressions_and_clicks_reach_the_funnel(
        redis_url: str) -> None:
    async with slot_server(redis_url) as (base, client, sink, prefix), \
            aiohttp.ClientSession() as http:
        profiles = LiveProfileStore(client, prefix)
        await profiles.put("ann", user_state("ann", "promo_driven").profile, T0)
        _, body, _ = await get(http, base, "ann", signature=sig("ann"))
        for _ in range(2):  # a beacon counts once
            async with http.get(base + body["impression"]) as resp:
                assert resp.status == 200 and resp.content_type == "image/gif"
        async with http.get(base + body["products"][0]["link"], allow_redirects=False) as resp:
            assert resp.status == 302
        _, served, _ = await get(http, base, "ann", slot="served", signature=sig("ann"))
        assert served["variant"] == "deals" and served["impression"] is None
        for _ in range(100):
            if len(sink.events) == 3:
                break
            await asyncio.sleep(0.05)
        kinds = [(e.kind, e.slot, e.variant, e.to_dict()["channel"]) for e in sink.events]
        assert kinds == [("delivered", "home", "hot_deals", "slot"),
                         ("clicked", "home", "hot_deals", "slot"),
                         ("delivered", "served", "deals", "slot")]
        events = [e.to_event() for e in sink.events]
        last = max(e.ts for e in events)
        events.append(Event("ann", last + 1, "purchase",
                            {"type": "purchase", "price": "25.00", "product_id": "3001"}))
        config = load_config_text(config_text(prefix, SERVED))
        rows = {(r.kind, r.name, r.variant): r.to_dict()
                for r in build_report([], events, options_of(config))}
        home = rows[("slot", "home", "hot_deals")]
        assert (home["treated"], home["delivered"], home["clicked"], home["converted"]) == (
            1, 1, 1, 1)
        assert home["revenue"] == 25.0
        assert rows[("slot", "served", "deals")]["delivered"] == 1
        # The impression's and the click's once-markers name her: erasure finds them.
        marks = [k async for k in client.scan_iter(match=f"{prefix}once:*")]
        assert len(marks) == 2 and all(k.endswith(b":ann") for k in marks)
        receipt = await Eraser(client, config, prefix).erase("ann")
        assert receipt["removed"]["feedback_markers"] == 2
        assert [k async for k in client.scan_iter(match=f"{prefix}once:*")] == []


async def test_redis_away_is_a_503_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens
    async with slot_server(f"redis://127.0.0.1:{port}/0") as (base, *_), \
            aiohttp.ClientSession() as http:
        status, body, headers = await get(http, base, "ann", signature=sig("ann"))
        assert status == 503 and body["fault"] == "connection" and "Retry-After" in headers
        status, body, _ = await get(http, base, "ann")  # unsigned: no state read
        assert status == 200 and body["title"] == "Welcome"


async def test_a_burst_past_the_pool_waits_for_a_connection(redis_url: str) -> None:
    """serve's client (``wait_for_connection_s``): 50 requests at once on a
    pool of 2 all get an answer; redis-py's own pool refuses past its size."""
    from redis.exceptions import MaxConnectionsError

    waiting = redis_client(redis_url, wait_for_connection_s=5.0, max_connections=2)
    failing = redis_client(redis_url, max_connections=2)
    try:
        assert await asyncio.gather(*(waiting.ping() for _ in range(50))) == [True] * 50
        # Every ping ends before the pool closes: a gather that raised at the
        # first refusal left two pings running, whose connections were
        # garbage-collected unclosed in a later test (CI: test_user_admin.py).
        refused = await asyncio.gather(*(failing.ping() for _ in range(50)),
                                       return_exceptions=True)
        assert sum(isinstance(r, MaxConnectionsError) for r in refused) == 48
        assert refused.count(True) == 2
    finally:
        await waiting.aclose()
        await failing.aclose()


async def test_a_signed_request_is_one_redis_round_trip(redis_url: str) -> None:
    from redis.asyncio import Connection

    sent: list[int] = []

    class Counting(Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sent.append(1)
            await super().send_packed_command(command, check_health)

    prefix = f"sl{uuid.uuid4().hex[:6]}:"
    config = load_config_text(config_text(prefix))
    counted = redis_client(redis_url, connection_class=Counting)
    writer = redis_client(redis_url)
    try:
        await LiveProfileStore(writer, prefix).put("ann", user_state("ann", "promo_driven")
                                                   .profile, T0)
        await RedisTagStore(writer, prefix).add("ann", ["vip"])
        app = build_app(ServeParts(config, counted, ListSink(), tags_prefix=prefix,
                                   env={SLOT_SECRET_ENV: SLOT_SECRET},
                                   slot_catalog=MemoryCatalog(catalog_products())))
        async with serve_app(app) as base, aiohttp.ClientSession() as http:
            await counted.ping()  # the connection's handshake is not the request's
            before = len(sent)
            status, body, _ = await get(http, base, "ann", signature=sig("ann"))
            assert status == 200 and body["variant"] == "vip_deal"
            assert len(sent) - before == 1
    finally:
        await counted.aclose()
        await writer.aclose()
