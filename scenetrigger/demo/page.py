"""The demo's HTTP side (aiohttp): a live operator page, its JSON, metrics, health.

``GET /`` the page (static HTML; it fetches ``/api/state`` every second and
writes every value with ``textContent``, never as HTML), ``GET /api/state``,
``GET /metrics`` (the runtime's own Prometheus registry), ``GET /healthz``.

``POST /api/catalog`` (when the config has catalog scenes): catalog records,
one object or an array, in the record format of serve's ``POST /catalog``
and with its checks (:mod:`scenetrigger.serve.catalog_http`), take effect at
the simulated now (:meth:`EmbeddedRuntime.add_catalog`). Its token is the
catalog feed's, ``Authorization: Bearer $SCENETRIGGER_CATALOG_TOKEN``
(the demo makes one for the run when it is unset; none given here: every
request refused). A refused record is answered with its reason, counted in
``scenetrigger_catalog_rejected_total{reason}`` and logged (the demo has no
dead-letter topic); the valid ones still apply (422 then, else 200).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from importlib import resources

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config.tokens import bearer, token_matches
from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.serve.catalog_http import catalog_counters, catalog_items
from scenetrigger.serve.csp import content_security_policy
from scenetrigger.serve.site import start_site
from triggers.errors import EventRejected
from triggers.events import DEFAULT_MAX_ID_CHARS

RUNTIME_KEY = web.AppKey("runtime", EmbeddedRuntime)
PAGE_KEY = web.AppKey("page", bytes)
CSP_KEY = web.AppKey("csp", str)
CATALOG_KEY = web.AppKey("catalog", tuple)  # (token, max_id_chars)

log = logging.getLogger("scenetrigger.demo.page")


def load_page() -> bytes:
    return resources.files("scenetrigger").joinpath("web/index.html").read_bytes()


def create_app(runtime: EmbeddedRuntime, catalog_token: str | None = None,
               max_id_chars: int = DEFAULT_MAX_ID_CHARS) -> web.Application:
    app = web.Application()
    page = load_page()
    app[RUNTIME_KEY] = runtime
    app[PAGE_KEY] = page
    app[CSP_KEY] = content_security_policy(page)
    app.router.add_get("/", _index)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/favicon.ico", _no_icon)
    if runtime.catalog is not None:
        app[CATALOG_KEY] = (catalog_token, max_id_chars)
        app.router.add_post("/api/catalog", _catalog)
    return app


_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


async def _index(request: web.Request) -> web.Response:
    headers = {**_COMMON_HEADERS, "Content-Security-Policy": request.app[CSP_KEY],
               "Referrer-Policy": "no-referrer"}
    return web.Response(body=request.app[PAGE_KEY], content_type="text/html",
                        charset="utf-8", headers=headers)


async def _state(request: web.Request) -> web.Response:
    body = orjson.dumps(request.app[RUNTIME_KEY].snapshot())
    return web.Response(body=body, content_type="application/json", headers=_COMMON_HEADERS)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[RUNTIME_KEY].metrics.registry)
    resp = web.Response(body=body, headers=_COMMON_HEADERS)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=_COMMON_HEADERS)


async def _catalog(request: web.Request) -> web.Response:
    token, max_id_chars = request.app[CATALOG_KEY]
    if not token:
        raise web.HTTPForbidden(text="POST /api/catalog is off: no catalog token")
    if not token_matches(bearer(request.headers.get("Authorization", "")), token):
        raise web.HTTPUnauthorized(text="a valid catalog token is required",
                                   headers={"WWW-Authenticate": "Bearer"})
    runtime = request.app[RUNTIME_KEY]
    applied_total, rejected_total = catalog_counters(runtime.metrics.registry)
    applied, reasons, ts = 0, Counter[str](), None
    for index, item, _raw in catalog_items(await request.read(), max_id_chars):
        if isinstance(item, EventRejected):
            reasons[item.reason] += 1
            rejected_total.labels(reason=item.reason).inc()
            log.warning("catalog record refused",
                        extra={"index": index, "reason": item.reason, "detail": item.detail})
            continue
        ts = runtime.add_catalog(item)
        applied += 1
    applied_total.inc(applied)
    rejected = sum(reasons.values())
    body = {"applied": applied, "rejected": rejected, "reasons": dict(sorted(reasons.items())),
            "ts": ts}
    return web.json_response(body, status=422 if rejected else 200, headers=_COMMON_HEADERS)


async def _no_icon(_request: web.Request) -> web.Response:
    return web.Response(status=204)


@dataclass(frozen=True, slots=True)
class Served:
    runner: web.AppRunner
    url: str  # base URL with the port actually bound, ending in "/"


async def serve(runtime: EmbeddedRuntime, host: str = "127.0.0.1", port: int = 8080,
                catalog_token: str | None = None,
                max_id_chars: int = DEFAULT_MAX_ID_CHARS) -> Served:
    """Start the app on ``host:port`` (port 0: a free one); returns the URL bound."""
    runner, base = await start_site(create_app(runtime, catalog_token, max_id_chars), host,
                                    port)
    return Served(runner, f"{base}/")
