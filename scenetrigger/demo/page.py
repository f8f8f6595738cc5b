"""The demo's HTTP side (aiohttp): a live operator page, its JSON, metrics, health.

``GET /`` the page (static HTML; it fetches ``/api/state`` every second and
writes every value with ``textContent``, never as HTML), ``GET /api/state``,
``GET /metrics`` (the runtime's own Prometheus registry), ``GET /healthz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.serve.csp import content_security_policy
from scenetrigger.serve.site import start_site

RUNTIME_KEY = web.AppKey("runtime", EmbeddedRuntime)
PAGE_KEY = web.AppKey("page", bytes)
CSP_KEY = web.AppKey("csp", str)


def load_page() -> bytes:
    return resources.files("scenetrigger").joinpath("web/index.html").read_bytes()


def create_app(runtime: EmbeddedRuntime) -> web.Application:
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


async def _no_icon(_request: web.Request) -> web.Response:
    return web.Response(status=204)


@dataclass(frozen=True, slots=True)
class Served:
    runner: web.AppRunner
    url: str  # base URL with the port actually bound, ending in "/"


async def serve(runtime: EmbeddedRuntime, host: str = "127.0.0.1", port: int = 8080) -> Served:
    """Start the app on ``host:port`` (port 0: a free one); returns the URL bound."""
    runner, base = await start_site(create_app(runtime), host, port)
    return Served(runner, f"{base}/")
