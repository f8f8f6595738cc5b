"""``scenetrigger serve``: the HTTP side of delivery in one aiohttp server.

Routes (all on one port, loopback by default):

* feedback: ``GET /t/o/{message_id}.gif`` (open pixel), ``GET /t/c/{message_id}``
  (signed click redirect), ``POST /callbacks/{provider}`` (provider reports,
  ``Authorization: Bearer $SCENETRIGGER_CALLBACK_TOKEN``, never in the URL)
  — see :mod:`channels.feedback.events`;
* inbox: ``GET /inbox/{user_id}``, ``POST /inbox/{user_id}/ack`` — need
  ``Authorization: Bearer <token>``: an admin token
  (``$SCENETRIGGER_ADMIN_TOKEN`` or a named one of ``$SCENETRIGGER_ADMIN_TOKENS``,
  :class:`config.tokens.AdminTokens`, as every admin route) or the user's own
  expiring token ``EXP.SIG``, ``SIG = hex(HMAC-SHA256($SCENETRIGGER_INBOX_SECRET,
  "inbox\n" + user_id + "\n" + EXP))``, minted by the shop's backend for its
  logged-in user (:func:`config.tokens.inbox_token`). No token: 401; a wrong or
  stale one: 400/403 with the slots' reasons; the old never-expiring token
  only with ``--inbox-legacy-tokens``;
* ``GET /users/{user_id}/tags`` and ``/score`` (admin token; strategies.http);
* ``GET/PUT/PATCH/DELETE /users/{user_id}``: the user directory (admin token;
  :mod:`scenetrigger.ops.user_admin`; DELETE erases the user); ``POST /users/identify``
  (also ``/identify``; the backend's ``$SCENETRIGGER_IDENTIFY_TOKEN`` or an
  admin token, else 403; needs ``--broker``): an anonymous id is a known user now;
* ``GET/POST /unsubscribe/{channel}``, ``POST /inbound/sms/{provider}``,
  ``GET/POST /inbound/wechat``: consent (:mod:`channels.audience.consent_http`;
  ``$SCENETRIGGER_WECHAT_TOKEN`` is the WeChat server token);
* ``POST /catalog``: catalog records onto the catalog stream (its own token,
  ``$SCENETRIGGER_CATALOG_TOKEN``; needs ``--broker``; :mod:`scenetrigger.serve.catalog_http`);
* ``GET /slots/{slot}?user=ID&exp=UNIX_S&sig=SIG``: an on-site slot's content for this
  visitor now, from the live profile and tags; ``GET /slots.js``, the snippet
  (:mod:`scenetrigger.serve.slots_http`, docs/ads.md "On-site slots");
  ``GET /slots-demo.html`` only with ``--slots-demo``;
* ``GET /metrics`` (Prometheus, this server's own registry), ``GET /healthz``
  (pings Redis).

A request whose Redis refuses the write (out of memory, read-only replica,
cluster) or cannot be reached is answered 503 with ``Retry-After``, counted
in ``scenetrigger_infra_errors_total{component="serve"}``; the server stays up
(:func:`channels.infra_retry.unavailable_middleware`).

Feedback events (``type`` ``opened``, ``clicked``, ...: the one feedback
vocabulary, docs/content.md) go to the Kafka events topic (``--broker``; keyed
by user, ``PREFIX.events`` with ``--topic-prefix``) so scenes can use them,
and, with ``--journeys-feedback``, the same records also to the journeys'
feedback topic the ``journeys`` bridge reads; without ``--broker`` they are
printed as JSON lines.
Message metadata comes from the Redis message index that live delivery
(``replay --deliver live``) fills, under ``delivery.redis_prefix``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from channels.admin_auth import admin_name
from channels.ads.build import watch_ads_consent
from channels.audience.consent import RedisConsentStore
from channels.audience.consent_http import ConsentRoutes
from channels.audience.directory import RedisDirectory
from channels.content.catalog import CachedCatalog, MemoryCatalog, RedisCatalog
from channels.content.slots import SlotContent
from channels.feedback.events import (
    FeedbackApp,
    FeedbackEvent,
    FeedbackSink,
    JsonlSink,
    RedisMessageIndex,
)
from channels.feedback.kafka_sink import KafkaFeedbackSink
from channels.feedback.slot_ids import SlotAwareIndex
from channels.infra_retry import InfraMetrics, unavailable_middleware
from channels.policy.decide import DeliveryPolicy
from channels.policy.store import RedisPolicyStore
from channels.redis_client import DEFAULT_REDIS_URL, redis_client, redis_url_or_env
from channels.transports.inbox import InboxStore, inbox_routes
from channels.transports.registry import address_fields, consent_defaults
from config.ads_models import ADS_CONSENT
from config.channel_models import InboxModel
from config.clock import wall_ms
from config.models import AppConfig
from config.tokens import (
    CATALOG_TOKEN_ENV,
    IDENTIFY_TOKEN_ENV,
    INBOX_SECRET_ENV,
    SLOT_SECRET_ENV,
    AdminTokens,
    Refusal,
    bearer,
    inbox_signature,
    legacy_inbox_token,
    refuse_signed_until,
    token_matches,
)
from scenetrigger.cli import config_follow
from scenetrigger.cli.support import add_replication_argument
from scenetrigger.ops.erasure import Eraser
from scenetrigger.ops.user_admin import UserAdmin
from scenetrigger.serve.catalog_http import add_catalog_route
from scenetrigger.serve.site import SwappableSite
from scenetrigger.serve.slots_http import SlotRoutes
from strategies.http import add_routes
from strategies.store import RedisTagStore
from triggers.errors import SceneTriggerError

log = logging.getLogger("scenetrigger.serve")
WECHAT_TOKEN_ENV = "SCENETRIGGER_WECHAT_TOKEN"  # noqa: S105 - a variable name
POOL_WAIT_S = 5.0


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="HTTP: open pixel, click redirect, provider "
                                          "callbacks, inbox, tags/score, on-site slots, "
                                          "/metrics")
    parser.add_argument("--config", help="config (delivery.tracking, channels, strategies)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port (default 8090; 0 = any)")
    parser.add_argument("--redis-url", help=f"default: $SCENETRIGGER_REDIS_URL or "
                                            f"{DEFAULT_REDIS_URL}")
    parser.add_argument("--broker", help="Kafka bootstrap: feedback goes to the events topic "
                                         "(without it: JSON lines on stdout)")
    parser.add_argument("--topic-prefix", help="PREFIX.events / PREFIX.feedback")
    parser.add_argument("--journeys-feedback", action="store_true",
                        help="also publish to the journeys' feedback topic "
                             "(PREFIX.feedback, read by `scenetrigger journeys`)")
    parser.add_argument("--tags-prefix", default="scenetrigger:",
                        help="Redis prefix of tags, scores and live profiles (as `journeys "
                             "--redis-prefix`; GET /slots reads both)")
    parser.add_argument("--slots-demo", action="store_true",
                        help="also serve /slots-demo.html, the snippet's try-out page "
                             "(not on a production host: 404 without this)")
    parser.add_argument("--inbox-legacy-tokens", action="store_true",
                        help="deprecated, for a migration only: also accept the old inbox "
                             "token hex(HMAC(secret, user_id)), which never expires; each use "
                             "is counted in scenetrigger_inbox_legacy_tokens_total "
                             "(docs/security.md, \"Inbox tokens\")")
    add_replication_argument(parser)
    config_follow.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


@dataclass
class CountingSink:
    """Counts feedback by kind on /metrics, then passes it on."""

    inner: FeedbackSink
    counter: Any
    failures: Any

    async def emit(self, event: FeedbackEvent) -> None:
        try:
            await self.inner.emit(event)
        except Exception:
            self.failures.inc()
            raise
        self.counter.labels(kind=event.kind).inc()


@dataclass
class ServeParts:
    """What :func:`build_app` needs; tests pass their own."""

    config: AppConfig
    redis: Any
    sink: FeedbackSink
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    tags_prefix: str = "scenetrigger:"
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    eraser: Any = None  # async (user_id) -> receipt; default: scenetrigger.ops.erasure over Redis
    publish: Any = None  # async (event dict) -> None onto the events topic (--broker), or None
    catalog: Any = None  # scenetrigger.serve.catalog_http.Publish onto the catalog topic, or None
    slot_catalog: Any = None  # the Catalog slots read (cached); None: an empty one
    slots_demo: bool = False  # serve /slots-demo.html (--slots-demo)
    inbox_legacy_tokens: bool = False  # also the old never-expiring inbox token (migration)


def inbox_model(config: AppConfig) -> InboxModel:
    """The first inbox channel of the config (its key prefix and caps), or the defaults."""
    for model in config.channels.values():
        if isinstance(model, InboxModel):
            return model
    return InboxModel(type="inbox")


# A config reload builds the app again on the same registry: each metric is
# made once per registry (prometheus refuses a second one of the same name).
_METRICS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _once(reg: CollectorRegistry, name: str, make: Callable[[], Any]) -> Any:
    made = _METRICS.setdefault(reg, {})
    if name not in made:
        made[name] = make()
    return made[name]


def _feedback_counters(reg: CollectorRegistry) -> tuple[Any, Any]:
    pair: tuple[Any, Any] = _once(reg, "feedback", lambda: (
        Counter("scenetrigger_feedback_events", "Feedback events emitted by kind", ["kind"],
                registry=reg),
        Counter("scenetrigger_feedback_sink_errors", "Feedback events the sink refused",
                registry=reg)))
    return pair


def _identify_refused(reg: CollectorRegistry) -> Any:
    return _once(reg, "identify_refused", lambda: Counter(
        "scenetrigger_identify_refused", "POST /users/identify refused (403): neither the "
        "backend's identify token nor an admin token", registry=reg))


def _legacy_inbox_tokens(reg: CollectorRegistry) -> Any:
    return _once(reg, "inbox_legacy", lambda: Counter(
        "scenetrigger_inbox_legacy_tokens", "Old never-expiring inbox tokens presented "
        "with the right signature: accepted (serve --inbox-legacy-tokens) or refused",
        ["outcome"], registry=reg))


def build_app(parts: ServeParts) -> web.Application:
    config, env = parts.config, parts.env
    tracking = config.delivery.tracking
    reg = parts.registry
    sink = CountingSink(parts.sink, *_feedback_counters(reg))
    policy = DeliveryPolicy(config.delivery, RedisPolicyStore(parts.redis))
    feedback = FeedbackApp(sink, SlotAwareIndex(RedisMessageIndex(parts.redis,
                                                                  config.delivery.redis_prefix)),
                           env.get(tracking.secret_env, "").encode(),
                           env.get(tracking.callback_token_env) or None,
                           tuple(tracking.allow_hosts), policy.record_engaged)
    app = web.Application(client_max_size=1 << 20, middlewares=[
        unavailable_middleware(InfraMetrics.on(reg), "serve")])  # Redis full or away: 503
    feedback.add_routes(app)
    model = inbox_model(config)
    store = InboxStore(parts.redis, model.key_prefix, model.max_messages, model.retention,
                       model.dedupe_ttl)
    admins = AdminTokens.from_env(env)
    app.add_routes(inbox_routes(store, inbox_authorizer(
        admins, env.get(INBOX_SECRET_ENV, ""), legacy=parts.inbox_legacy_tokens,
        legacy_counter=_legacy_inbox_tokens(reg))))
    add_routes(app, RedisTagStore(parts.redis, parts.tags_prefix), config.strategies.scoring,
               admins)
    prefix = config.delivery.redis_prefix
    directory = RedisDirectory(parts.redis, prefix)
    # an ads withdrawal, by any path, also leaves every synced ad audience (docs/ads.md)
    consent = watch_ads_consent(RedisConsentStore(parts.redis, prefix), parts.redis, config)
    types = [t for t in config.channel_types().values() if t != "log"] or ["email"]
    if config.ads.sinks:  # the page's "all" withdraws ads too (docs/ads.md)
        types.append(ADS_CONSENT)
    consent_routes = ConsentRoutes(directory, consent, env.get(tracking.secret_env, "").encode(),
                                   sink, env.get(tracking.callback_token_env) or None,
                                   env.get(WECHAT_TOKEN_ENV) or None,
                                   preferences=config.delivery.preferences,
                                   channel_types=types,
                                   defaults=consent_defaults(config.delivery.audience.consent),
                                   address_fields=address_fields())
    consent_routes.add_routes(app)
    eraser = parts.eraser or Eraser(parts.redis, config, parts.tags_prefix).erase
    UserAdmin(directory, consent, eraser, consent_routes.record, parts.publish,
              env.get(IDENTIFY_TOKEN_ENV) or None, _identify_refused(reg),
              tokens=admins).add_routes(app)
    add_catalog_route(app, env.get(CATALOG_TOKEN_ENV), parts.catalog,
                      config.engine.max_id_chars, reg)
    slots = SlotContent(config.content, config.slots,
                        CachedCatalog(parts.slot_catalog or MemoryCatalog()),
                        config.delivery.default_timezone)
    SlotRoutes(slots, parts.redis, parts.tags_prefix, env.get(SLOT_SECRET_ENV, ""),
               env.get(tracking.secret_env, "").encode(), sink,
               tracking.base_url, demo=parts.slots_demo).add_routes(app)

    async def metrics(_request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(reg))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def healthz(_request: web.Request) -> web.Response:
        try:
            await parts.redis.ping()
        except Exception as exc:  # any Redis failure: not healthy
            return web.json_response({"status": "down", "redis": str(exc)[:200]}, status=503)
        return web.json_response({"status": "ok"})

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


Authorizer = Callable[[web.Request, str], Any]


def inbox_authorizer(admins: AdminTokens, user_secret: str, *, legacy: bool = False,
                     legacy_counter: Any = None,
                     clock: Callable[[], int] = wall_ms) -> Authorizer:
    """Bearer admin token, or the user's own expiring inbox token ``EXP.SIG``
    (:func:`config.tokens.inbox_token`), checked by the slots' own
    :func:`config.tokens.refuse_signed_until`. No token, or no inbox secret
    configured: 401; a wrong, malformed or stale one: 400/403 with its ``reason``. The old token
    (``SIG`` alone, never expiring) only when ``legacy``; a correctly signed
    one is counted either way, so an operator sees who still sends it.
    With neither secret configured every request is refused (closed by default)."""
    warned: list[bool] = []

    async def authorize(request: web.Request, user_id: str) -> bool:
        if admin_name(admins, request) is not None:
            return True
        given = bearer(request.headers.get("Authorization", ""))
        if not (given and user_secret):  # no inbox token could be right: not an inbox check
            raise web.HTTPUnauthorized(text="a valid inbox or admin token is required",
                                       headers={"WWW-Authenticate": "Bearer"})
        exp_text, dot, sig = given.partition(".")
        refusal = None
        if not dot:  # no exp: the old token, or not a token at all
            exp_text, sig = "", given
            old = _old_token(sig, user_id)
            if old:
                return True
            if old is False:  # say why, so a shop that upgraded finds the switch
                refusal = Refusal(400, "exp_missing", "this is the old inbox token, which "
                                  "never expires: mint EXP.SIG (docs/security.md, \"Inbox "
                                  "tokens\"), or start serve with --inbox-legacy-tokens while "
                                  "migrating")
        refusal = refusal or refuse_signed_until(
            sig, exp_text, clock() // 1000,
            lambda exp: inbox_signature(user_secret, user_id, exp))
        if refusal is None:
            return True
        raise _REFUSED_AS[refusal.status](text=orjson.dumps(refusal.body()).decode(),
                                          content_type="application/json",
                                          headers={"Cache-Control": "no-store"})

    def _old_token(token: str, user_id: str) -> bool | None:
        """None: not ``user_id``'s old token; else whether it is accepted."""
        # an id with "\n" may be "inbox\n" + another + "\n" + exp: its old token
        # would be that other user's new signature, so never the old form for it
        if "\n" in user_id or not token_matches(token, legacy_inbox_token(user_secret, user_id)):
            return None
        if legacy_counter is not None:
            legacy_counter.labels(outcome="accepted" if legacy else "refused").inc()
        if legacy and not warned:
            warned.append(True)
            log.warning("an old never-expiring inbox token was accepted (--inbox-legacy-tokens):"
                        " mint EXP.SIG tokens, then drop the flag (docs/security.md)")
        return legacy

    return authorize


_REFUSED_AS: dict[int, type[web.HTTPClientError]] = {400: web.HTTPBadRequest,
                                                      403: web.HTTPForbidden}


async def _main(args: argparse.Namespace) -> int:
    from config.hash_keys import startup_check
    from config.reload import ReloadMetrics

    startup_check("serve")  # do-not-contact entries (SMS opt-outs, erasure)
    if args.inbox_legacy_tokens:
        log.warning("--inbox-legacy-tokens: old inbox tokens, which never expire, are accepted;"
                    " watch scenetrigger_inbox_legacy_tokens_total{outcome=\"accepted\"} and "
                    "drop the flag once the backend mints EXP.SIG tokens (docs/security.md)")

    reloader = await config_follow.initial_reloader(
        args.config, config_follow.open_store(args.config_store, args.broker, args.topic_prefix),
        None)
    registry = CollectorRegistry()
    reloader.attach(ReloadMetrics.on(registry))
    url = redis_url_or_env(args.redis_url)
    # a burst past the pool waits for a connection, not a 503 (GET /slots under load)
    client = redis_client(url, wait_for_connection_s=POOL_WAIT_S)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.aclose)
        sink: FeedbackSink = JsonlSink(sys.stdout)
        if args.broker:
            from agents.kafka_clients import new_producer
            from agents.producer import ensure_topics
            from agents.topics import bootstrap_servers, feedback_topics, topic_name

            events, *journeys = feedback_topics(args.topic_prefix, args.journeys_feedback)
            await ensure_topics(bootstrap_servers(args.broker),
                                [events, *journeys, topic_name(args.topic_prefix, "decisions")],
                                replication=args.replication_factor)
            producer = new_producer(bootstrap_servers(args.broker))
            await producer.start()
            stack.push_async_callback(producer.stop)
            # the same record on the events (and journeys') topic, and the decision log's
            sink = KafkaFeedbackSink(producer, [events, *journeys],
                                     decisions=topic_name(args.topic_prefix, "decisions"))
            events_topic = events

            async def publish(record: dict[str, Any]) -> None:
                """An event of ours on the events topic, keyed by its user."""
                await producer.send_and_wait(events_topic, orjson.dumps(record),
                                             key=str(record["user_id"]).encode())

            from scenetrigger.ops.erase_events import erase_sender

            forget: Any = await erase_sender(producer, bootstrap_servers(args.broker),
                                             args.topic_prefix, "serve")
            to_events: Any = publish
            catalog: Any = await catalog_publisher(bootstrap_servers(args.broker), producer,
                                                    args.topic_prefix, args.replication_factor)
        else:
            forget = to_events = catalog = None

        catalog_client = redis_client(url, decode_responses=True)  # the catalog's hashes
        stack.push_async_callback(catalog_client.aclose)

        def app_for(config: AppConfig) -> web.Application:
            slot_catalog = RedisCatalog(catalog_client, f"{config.delivery.redis_prefix}cat:")
            return build_app(ServeParts(config, client, sink, tags_prefix=args.tags_prefix,
                                        slot_catalog=slot_catalog, slots_demo=args.slots_demo,
                                        inbox_legacy_tokens=args.inbox_legacy_tokens,
                                        registry=registry,
                                        eraser=Eraser(client, config, args.tags_prefix,
                                                      forget_in_worker=forget).erase,
                                        publish=to_events, catalog=catalog))

        try:  # one listening socket for the life of the process: a reload swaps the app
            site = SwappableSite.listen(args.host, args.port)
        except OSError as exc:
            raise SceneTriggerError(f"cannot listen on {args.host}:{args.port}: "
                                    f"{exc.strerror or exc}") from None
        stack.push_async_callback(site.close)
        await site.serve(app_for(reloader.config))
        reloader.subscribe(config_follow.refusing(
            lambda config: site.replace(app_for(config))))
        host, port = site.address
        print(f"scenetrigger serve: http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr,
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with config_follow.following(reloader, config_follow.interval_ms(args)):
            await stop.wait()
    return 0


async def catalog_publisher(bootstrap: str, producer: Any, prefix: str | None,
                             replication: int | None) -> Any:
    """POST /catalog's sender: PREFIX.catalog (compacted) and PREFIX.dead-letters."""
    from agents.catalog_stream import CatalogTopics, ensure_catalog_topics, send_catalog
    from agents.producer import PipelinedProducer

    topics = CatalogTopics.of(prefix)
    await ensure_catalog_topics(bootstrap, topics, replication=replication)

    async def publish(items: Any, on_reject: Any) -> Any:
        return await send_catalog(items, PipelinedProducer(producer), topics,
                                  source="serve:/catalog", on_reject=on_reject)

    return publish
