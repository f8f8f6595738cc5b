"""``POST /catalog`` on ``serve``: a shop's product system pushes catalog
records (one JSON object, or an array of them) onto the catalog stream
(:mod:`agents.catalog_stream`).

Its own token, ``Authorization: Bearer $SCENETRIGGER_CATALOG_TOKEN``
(constant-time, :func:`config.tokens.token_matches`): unset, every request
is refused (403); a missing or wrong token is 401 and nothing is sent.
Every valid record is sent as given (no diff: the caller sends changes);
a refused one is dead-lettered with its reason and counted in
``scenetrigger_catalog_rejected_total{reason}``; the answer is 200 when all
were sent, 422 when some were refused (the valid ones were still sent), with
the counts. Without ``serve --broker`` the route answers 503.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from agents.catalog_stream import CatalogSummary, Decoded, decode_items
from config.tokens import CATALOG_TOKEN_ENV, bearer, token_matches
from triggers.errors import EventRejected
from triggers.events import REASON_INVALID_JSON

# The publisher serve --broker gives: the decoded items in, the summary out.
Publish = Callable[[Sequence[Decoded], Callable[[str], None]], Awaitable[CatalogSummary]]

_COUNTERS: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def catalog_counters(reg: CollectorRegistry) -> tuple[Any, Any]:
    """(records sent, records rejected by reason): one pair per registry, as a
    config reload builds the app again on the same registry."""
    found = _COUNTERS.get(reg)
    if found is None:
        found = _COUNTERS[reg] = (
            Counter("scenetrigger_catalog_records", "Catalog records sent to the catalog topic",
                    registry=reg),
            Counter("scenetrigger_catalog_rejected", "Catalog records dead-lettered, by reason",
                    ["reason"], registry=reg))
    return found


def add_catalog_route(app: web.Application, token: str | None, publish: Publish | None,
                      max_id_chars: int, registry: CollectorRegistry) -> None:
    sent_total, rejected_total = catalog_counters(registry)

    async def post(request: web.Request) -> web.Response:
        if not token:
            raise web.HTTPForbidden(text=f"POST /catalog is off: set {CATALOG_TOKEN_ENV}")
        if not token_matches(bearer(request.headers.get("Authorization", "")), token):
            raise web.HTTPUnauthorized(text="a valid catalog token is required",
                                       headers={"WWW-Authenticate": "Bearer"})
        if publish is None:
            raise web.HTTPServiceUnavailable(text="POST /catalog needs serve --broker")
        items = catalog_items(await request.read(), max_id_chars)
        summary = await publish(items, lambda reason: rejected_total.labels(reason=reason).inc())
        sent_total.inc(summary.sent)
        body = {"sent": summary.sent, "rejected": summary.rejected,
                "reasons": dict(sorted(summary.reasons.items())), "topic": summary.topic}
        return web.json_response(body, status=422 if summary.rejected else 200)

    app.router.add_post("/catalog", post)


def catalog_items(body: bytes, max_id_chars: int) -> list[Decoded]:
    """A request body's records (one object or an array; the demo's
    ``POST /api/catalog`` reads them too). A body that is not JSON is one rejection (dead-lettered whole)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [(0, EventRejected(REASON_INVALID_JSON, f"the body is not JSON: {exc}"), body)]
    return list(decode_items(parsed if isinstance(parsed, list) else [parsed], max_id_chars))
