"""Read-only admin routes: a user's tags and lead score.

``GET /users/{user_id}/tags`` and ``GET /users/{user_id}/score`` need
``Authorization: Bearer <token>``, one of the admin tokens from the environment
(``SCENETRIGGER_ADMIN_TOKEN`` or the named ``SCENETRIGGER_ADMIN_TOKENS``,
:class:`config.tokens.AdminTokens`); without a configured token they refuse
every request. The score is decayed to the request time (``?now_ms=`` may
pin the time, for replays and tests).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from channels.admin_auth import require_admin
from config.clock import wall_ms
from config.strategy_models import ScoringModel
from config.tokens import AdminTokens
from strategies.scoring import decayed
from strategies.store import TagStore

STORE_KEY: web.AppKey[TagStore] = web.AppKey("strategies_tag_store", TagStore)
SCORING_KEY: web.AppKey[ScoringModel] = web.AppKey("strategies_scoring", ScoringModel)
TOKEN_KEY: web.AppKey[AdminTokens] = web.AppKey("strategies_admin_tokens", AdminTokens)
CLOCK_KEY: web.AppKey[Callable[[], int]] = web.AppKey("strategies_clock")


def add_routes(app: web.Application, store: TagStore, scoring: ScoringModel,
               tokens: AdminTokens | None = None, clock: Callable[[], int] = wall_ms) -> None:
    """Mount the routes on an existing app (``scenetrigger serve`` or a test);
    ``tokens`` defaults to the environment's."""
    app[STORE_KEY] = store
    app[SCORING_KEY] = scoring
    app[TOKEN_KEY] = tokens if tokens is not None else AdminTokens.from_env()
    app[CLOCK_KEY] = clock
    app.router.add_get("/users/{user_id}/tags", _tags)
    app.router.add_get("/users/{user_id}/score", _score)


def build_app(store: TagStore, scoring: ScoringModel, tokens: AdminTokens | None = None,
              clock: Callable[[], int] = wall_ms) -> web.Application:
    app = web.Application()
    add_routes(app, store, scoring, tokens, clock)
    return app


def authorise_admin(request: web.Request) -> str:
    """The name of the request's admin token: the tokens :func:`add_routes`
    was given, checked by :func:`channels.admin_auth.require_admin`."""
    return require_admin(request.app[TOKEN_KEY], request)


async def _tags(request: web.Request) -> web.Response:
    authorise_admin(request)
    user_id = request.match_info["user_id"]
    tags = await request.app[STORE_KEY].tags(user_id)
    return web.json_response({"user_id": user_id, "tags": sorted(tags)})


async def _score(request: web.Request) -> web.Response:
    authorise_admin(request)
    user_id = request.match_info["user_id"]
    pinned = request.query.get("now_ms")
    try:
        now_ms = int(pinned) if pinned is not None else request.app[CLOCK_KEY]()
    except ValueError:
        raise web.HTTPBadRequest(text="now_ms must be an integer") from None
    scoring = request.app[SCORING_KEY]
    stored = await request.app[STORE_KEY].score(user_id)
    value = 0.0 if stored is None else decayed(stored, now_ms, scoring.half_life)
    return web.json_response({
        "user_id": user_id, "score": value, "now_ms": now_ms,
        "stored": None if stored is None else {"value": stored.value, "at_ms": stored.at_ms},
        "threshold": scoring.threshold, "half_life_ms": scoring.half_life,
        "handoff_armed": None if stored is None else stored.armed,
    })
