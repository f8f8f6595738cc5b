"""The one admin check of every HTTP route: serve's user directory, tags and
score, the inbox's admin access, the console's admin actions.

A route's owner is handed the :class:`config.tokens.AdminTokens` (from the
environment: ``$SCENETRIGGER_ADMIN_TOKENS``, docs/security.md) and asks
:func:`require_admin` on every request; nothing is read from what another
route set up. The check is :meth:`AdminTokens.name_of` (every token compared
in constant time), and with no token configured every request is refused.
"""

from __future__ import annotations

from aiohttp import web

from config.tokens import ADMIN_TOKENS_HINT, AdminTokens, bearer


def admin_name(tokens: AdminTokens, request: web.Request) -> str | None:
    """The name of the request's bearer admin token, or None (also when no
    token is configured): for routes that accept another credential too."""
    return tokens.name_of(bearer(request.headers.get("Authorization", "")))


def require_admin(tokens: AdminTokens, request: web.Request) -> str:
    """The name of the request's bearer admin token; every request refused
    when none is configured (403), a wrong or missing token 401."""
    if not tokens:
        raise web.HTTPForbidden(text=f"admin routes are off: {ADMIN_TOKENS_HINT}")
    name = admin_name(tokens, request)
    if name is None:
        raise web.HTTPUnauthorized(text="a valid admin token is required",
                                   headers={"WWW-Authenticate": "Bearer"})
    return name
