"""The operator console (aiohttp): read-only views of a deployment or an
embedded replay, and admin actions behind a bearer token.

Read-only (``GET``), aggregates open on the (loopback by default) bind: ``/``
the page, ``/api/summary``, ``/api/rates`` (per-minute triggers and decisions
by scene and strategy), ``/api/funnels`` (uplift with its 95% CI, as
``scenetrigger report`` computes it), ``/api/journeys`` (every strategy's
step funnel, ``report --journey``'s), ``/api/kpis`` (the shop's KPIs,
``report --kpis --json``'s), ``/api/channels`` (return per ad sink and
audience, ``report --by channel --json``'s, with the spend ``audiences
import-spend`` stored when the console has a Redis), ``/api/config`` (the running config's
file, digest and scenes). Per-user data needs an admin token (below), as
serve's ``/users/{id}`` does: ``/api/users/{id}`` (the explain timeline) and
``/api/decisions`` (the newest decisions, each naming its user).

With a config version store (``config.versions``): ``/api/config`` lists the
versions, ``/api/config/versions/{n}`` shows one with its diff.

Admin (``POST``, ``Authorization: Bearer TOKEN``, one of the admin tokens
``scenetrigger config`` takes, ``$SCENETRIGGER_ADMIN_TOKEN(S)``, compared in
constant time; with none configured every admin request is refused):
``/api/admin/validate`` (a config's text: every error with line, scene and
field), ``/api/admin/whatif`` (that config against the running one on the
recorded sample, as ``scenetrigger diff``), ``/api/admin/push?message=M``
and ``/api/admin/rollback/{n}`` (``config.versions``' push and rollback, the
token's name as the author), ``/api/admin/erase/{id}``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from channels.admin_auth import require_admin
from config.loader import DEFAULT_CONFIG_PATH
from config.models import AppConfig
from config.tokens import AdminTokens
from config.versions import VersionStore
from scenetrigger.console.state import ConsoleState
from scenetrigger.serve.csp import content_security_policy
from triggers.errors import ConfigError, SceneTriggerError

MAX_CONFIG_BYTES = 1024 * 1024
_VENDOR = {"uPlot.iife.min.js": "application/javascript", "uPlot.min.css": "text/css",
           "LICENSE": "text/plain"}
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

Lookup = Callable[[str], Awaitable[Any]]  # user id -> Timeline
Eraser = Callable[[str], Awaitable[dict[str, Any]]]
SpendSource = Callable[[], Awaitable[list[Any]]]  # the imported ad spend (strategies.ads_spend)


@dataclass
class Console:
    state: ConsoleState
    config: AppConfig
    config_path: str | None
    env: dict[str, str]  # where the admin tokens are read (os.environ in the command)
    sample: str | None = None  # the recorded events what-if replays
    lookup: Lookup | None = None  # default: the state's own records
    eraser: Eraser | None = None  # Redis erasure (scenetrigger.ops.erasure) when configured
    versions: VersionStore | None = None  # config versions (push, rollback, log)
    spend: SpendSource | None = None  # none: the channel rows have no cost
    config_digest: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        path = Path(self.config_path) if self.config_path else DEFAULT_CONFIG_PATH
        self.config_digest = hashlib.sha256(path.read_bytes()).hexdigest()


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
    app.router.add_get("/api/journeys", _journeys)
    app.router.add_get("/api/kpis", _kpis)
    app.router.add_get("/api/channels", _channels)
    app.router.add_get("/api/config", _config)
    app.router.add_get("/api/config/versions/{number}", _version)
    app.router.add_get("/api/users/{user_id}", _user)
    app.router.add_post("/api/admin/validate", _validate)
    app.router.add_post("/api/admin/whatif", _whatif)
    app.router.add_post("/api/admin/erase/{user_id}", _erase)
    app.router.add_post("/api/admin/push", _push)
    app.router.add_post("/api/admin/rollback/{number}", _rollback)
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
    authorise(request)  # each decision names its user: personal data
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


async def _journeys(request: web.Request) -> web.Response:
    funnels = await asyncio.to_thread(request.app[CONSOLE_KEY].state.journeys())
    return await _json(funnels)


async def _kpis(request: web.Request) -> web.Response:
    figures = await asyncio.to_thread(request.app[CONSOLE_KEY].state.kpis())
    return await _json(figures)


async def _channels(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    spend = [] if console.spend is None else await console.spend()
    return await _json(await asyncio.to_thread(console.state.channels(spend)))


async def _config(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    versions = None if console.versions is None else [
        v.summary() for v in reversed(await console.versions.versions())]
    return await _json({"path": console.config_path or "(the shipped scenes)",
                        "sha256": console.config_digest, "scenes": list(console.config.scenes),
                        "channels": list(console.config.channels),
                        "versions": versions,
                        "current": versions[0]["version"] if versions else None})


async def _version(request: web.Request) -> web.Response:
    store = request.app[CONSOLE_KEY].versions
    if store is None:
        raise web.HTTPNotFound(text="no config version store (start with --config-store)")
    wanted = request.match_info["number"]
    for version in await store.versions():
        if str(version.version) == wanted:
            return await _json(version.summary() | {"text": version.text, "diff": version.diff})
    raise web.HTTPNotFound(text=f"no config version {wanted}")


async def _user(request: web.Request) -> web.Response:
    authorise(request)  # a user's timeline is personal data
    console = request.app[CONSOLE_KEY]
    user_id = request.match_info["user_id"]
    if console.lookup is not None:
        timeline = await console.lookup(user_id)
    else:
        timeline = await asyncio.to_thread(console.state.timeline(user_id))
    return await _json({"timeline": timeline.to_dict(), "text": timeline.render()})


def authorise(request: web.Request) -> str:
    """The admin token's name (``config.tokens.AdminTokens``: constant-time,
    every token compared); 403 when no admin token is configured, else 401."""
    return require_admin(AdminTokens.from_env(request.app[CONSOLE_KEY].env), request)


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
    base = console.config
    if console.versions is not None:  # the store's current version is what runs
        from config.loader import load_config_text
        from config.versions import current

        latest = current(await console.versions.versions())
        if latest is not None:
            base = load_config_text(latest.text, source=f"config v{latest.version}")
    result = await asyncio.to_thread(_compare, base, report.config, console.sample)
    return await _json({"ok": True, **result})


def _compare(base: AppConfig, candidate: AppConfig, sample: str) -> dict[str, Any]:
    from scenetrigger.runtime.sources import open_input, pick_format, read_events
    from scenetrigger.runtime.whatif import compare, render, run_side

    sides = []
    for config in (base, candidate):
        with open_input(sample) as (stream, _size):
            fmt, lines = pick_format("auto", stream, sample)
            sides.append(run_side(config, read_events(lines, fmt, config.engine.max_line_bytes,
                                                      config.id_limits())))
    result = compare(base, candidate, sides[0], sides[1], 3)
    return {"result": result, "text": render(result)}


def _store(request: web.Request) -> VersionStore:
    store = request.app[CONSOLE_KEY].versions
    if store is None:
        raise web.HTTPConflict(text="no config version store: start the console with "
                                    "--config-store")
    return store


async def _push(request: web.Request) -> web.Response:
    from config.versions import push

    author = authorise(request)
    store = _store(request)
    message = request.query.get("message", "").strip() or "pushed from the console"
    try:
        version = await push(store, await _text(request), message, author, "<console>")
    except ConfigError as exc:
        return await _json({"ok": False, "errors": exc.problems}, 422)
    except SceneTriggerError as exc:
        return await _json({"ok": False, "errors": [str(exc)]}, 409)
    return await _json({"ok": True, "pushed": version.summary(), "diff": version.diff})


async def _rollback(request: web.Request) -> web.Response:
    from config.versions import rollback

    author = authorise(request)
    store = _store(request)
    try:
        number = int(request.match_info["number"])
        version = await rollback(store, number, request.query.get("message", ""), author)
    except ValueError:
        raise web.HTTPBadRequest(text="a version number") from None
    except ConfigError as exc:
        return await _json({"ok": False, "errors": exc.problems}, 422)
    except SceneTriggerError as exc:
        return await _json({"ok": False, "errors": [str(exc)]}, 409)
    return await _json({"ok": True, "pushed": version.summary(), "diff": version.diff})


ERASED_COUNTS = ("kept: the per-minute charts and totals are counts without personal data "
                 "and stay as counted; the user's events, trigger lines and decisions (funnels, "
                 "lookups, recent decisions) are gone; a console started later with "
                 "--redis-url skips the user's records up to the erasure, so its counts of "
                 "that past are lower by them")


async def _erase(request: web.Request) -> web.Response:
    authorise(request)
    console = request.app[CONSOLE_KEY]
    user_id = request.match_info["user_id"]
    receipt: dict[str, Any] = {"removed": {}}
    if console.eraser is not None:
        receipt = await console.eraser(user_id)
    receipt["removed"]["console_records"] = console.state.erase(user_id)
    receipt["console_counts"] = ERASED_COUNTS  # docs/console.md: what erasure does to counts
    return await _json(receipt)
