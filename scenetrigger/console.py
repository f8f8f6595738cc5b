"""The operator console (aiohttp): read-only views of a deployment or an
embedded replay, and admin actions behind a bearer token.

Read-only (``GET``): ``/`` the page, ``/api/summary``, ``/api/rates``
(per-minute triggers and decisions by scene and strategy), ``/api/decisions``
(the newest), ``/api/funnels`` (uplift with its 95% CI, as ``scenetrigger
report`` computes it), ``/api/users/{id}`` (the explain timeline),
``/api/config`` (the running config's file, digest and scenes).

Admin (``POST``, ``Authorization: Bearer $SCENETRIGGER_CONSOLE_TOKEN``,
compared in constant time; with no token set every admin request is
refused): ``/api/admin/validate`` (a config's text: every error with line,
scene and field), ``/api/admin/whatif`` (that config against the running one
on the recorded sample, as ``scenetrigger diff``), ``/api/admin/erase/{id}``.
Pushing and rolling back config versions are not here yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from config.models import AppConfig
from scenetrigger.console_state import ConsoleState
from scenetrigger.web import content_security_policy

TOKEN_ENV = "SCENETRIGGER_CONSOLE_TOKEN"  # noqa: S105 - a variable name
MAX_CONFIG_BYTES = 1024 * 1024
_VENDOR = {"uPlot.iife.min.js": "application/javascript", "uPlot.min.css": "text/css",
           "LICENSE": "text/plain"}
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

Lookup = Callable[[str], Awaitable[Any]]  # user id -> Timeline
Eraser = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass
class Console:
    state: ConsoleState
    config: AppConfig
    config_path: str | None
    token: str | None
    sample: str | None = None  # the recorded events what-if replays
    lookup: Lookup | None = None  # default: the state's own records
    eraser: Eraser | None = None  # Redis erasure (scenetrigger.erasure) when configured
    config_digest: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.config_path:
            self.config_digest = hashlib.sha256(Path(self.config_path).read_bytes()).hexdigest()


CONSOLE_KEY = web.AppKey("console", Console)
PAGE_KEY = web.AppKey("console_page", bytes)
CSP_KEY = web.AppKey("console_csp", str)


def create_app(console: Console) -> web.Application:
    app = web.Application(client_max_size=MAX_CONFIG_BYTES)
    page = resources.files("scenetrigger").joinpath("web/console.html").read_bytes()
    app[CONSOLE_KEY] = console
    app[PAGE_KEY] = page
    app[CSP_KEY] = content_security_policy(page, own_files=True)
    app.router.add_get("/", _page)
    app.router.add_get("/vendor/uplot/{name}", _vendor)
    app.router.add_get("/api/summary", _summary)
    app.router.add_get("/api/rates", _rates)
    app.router.add_get("/api/decisions", _decisions)
    app.router.add_get("/api/funnels", _funnels)
    app.router.add_get("/api/config", _config)
    app.router.add_get("/api/users/{user_id}", _user)
    app.router.add_post("/api/admin/validate", _validate)
    app.router.add_post("/api/admin/whatif", _whatif)
    app.router.add_post("/api/admin/erase/{user_id}", _erase)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/favicon.ico", _no_icon)
    return app


async def _no_icon(_request: web.Request) -> web.Response:
    return web.Response(status=204)


async def _summary(request: web.Request) -> web.Response:
    return await _json(request.app[CONSOLE_KEY].state.summary())


async def _rates(request: web.Request) -> web.Response:
    return await _json(request.app[CONSOLE_KEY].state.rates())


async def _decisions(request: web.Request) -> web.Response:
    return await _json(request.app[CONSOLE_KEY].state.recent_decisions())


async def _healthz(_request: web.Request) -> web.Response:
    return await _json({"status": "ok"})


async def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status,
                        content_type="application/json", headers=_HEADERS)


async def _page(request: web.Request) -> web.Response:
    headers = {**_HEADERS, "Content-Security-Policy": request.app[CSP_KEY],
               "Referrer-Policy": "no-referrer"}
    return web.Response(body=request.app[PAGE_KEY], content_type="text/html", charset="utf-8",
                        headers=headers)


async def _vendor(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _VENDOR:
        raise web.HTTPNotFound()
    body = resources.files("scenetrigger").joinpath(f"web/vendor/uplot/{name}").read_bytes()
    return web.Response(body=body, content_type=_VENDOR[name],
                        headers={"X-Content-Type-Options": "nosniff"})


async def _funnels(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[CONSOLE_KEY].state.funnels())
    return await _json(rows)


async def _config(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    return await _json({"path": console.config_path or "(the shipped scenes)",
                        "sha256": console.config_digest, "scenes": list(console.config.scenes),
                        "channels": list(console.config.channels),
                        "versions": None})  # config versions: not kept yet


async def _user(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    user_id = request.match_info["user_id"]
    if console.lookup is not None:
        timeline = await console.lookup(user_id)
    else:
        timeline = await asyncio.to_thread(console.state.timeline(user_id))
    return await _json({"timeline": timeline.to_dict(), "text": timeline.render()})


def authorise(request: web.Request) -> None:
    """Bearer token, compared in constant time; every request refused when none is set."""
    expected = request.app[CONSOLE_KEY].token
    if not expected:
        raise web.HTTPForbidden(text=f"admin actions are off: set {TOKEN_ENV}")
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(
            given[len("Bearer "):].encode(), expected.encode()):
        raise web.HTTPUnauthorized(text="a valid console token is required",
                                   headers={"WWW-Authenticate": "Bearer"})


async def _text(request: web.Request) -> str:
    body = await request.read()
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the config is not UTF-8") from None


async def _validate(request: web.Request) -> web.Response:
    authorise(request)
    from config.loader import check_text

    report = check_text(await _text(request), "<console>")
    return await _json({"ok": not report.errors, "errors": [str(p) for p in report.errors],
                        "warnings": [str(p) for p in report.warnings]})


async def _whatif(request: web.Request) -> web.Response:
    authorise(request)
    from config.loader import check_text

    console = request.app[CONSOLE_KEY]
    report = check_text(await _text(request), "<console>")
    if report.errors or report.config is None:
        return await _json({"ok": False, "errors": [str(p) for p in report.errors]}, 422)
    if console.sample is None:
        return await _json({"ok": False, "errors": ["no recorded sample: start the console "
                                                    "with --sample FILE"]}, 409)
    result = await asyncio.to_thread(_compare, console.config, report.config, console.sample)
    return await _json({"ok": True, **result})


def _compare(base: AppConfig, candidate: AppConfig, sample: str) -> dict[str, Any]:
    from scenetrigger.cli_support import open_input, pick_format
    from scenetrigger.sources import read_events
    from scenetrigger.whatif import compare, render, run_side

    sides = []
    for config in (base, candidate):
        with open_input(sample) as (stream, _size):
            fmt, lines = pick_format("auto", stream, sample)
            sides.append(run_side(config, read_events(lines, fmt, config.engine.max_line_bytes,
                                                      config.id_limits())))
    result = compare(base, candidate, sides[0], sides[1], 3)
    return {"result": result, "text": render(result)}


async def _erase(request: web.Request) -> web.Response:
    authorise(request)
    console = request.app[CONSOLE_KEY]
    user_id = request.match_info["user_id"]
    receipt: dict[str, Any] = {"removed": {}}
    if console.eraser is not None:
        receipt = await console.eraser(user_id)
    receipt["removed"]["console_records"] = console.state.erase(user_id)
    return await _json(receipt)
