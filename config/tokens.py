"""Secret tokens: the one constant-time check every HTTP route and command
uses for a bearer or callback token (admin routes, the console's admin
actions, ``scenetrigger config``, provider callbacks, inbound opt-outs).
Closed by default: with no token configured nothing matches."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

BEARER = "Bearer "


def bearer(header: str) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header; "" for any other."""
    return header[len(BEARER):] if header.startswith(BEARER) else ""


def callback_token(headers: Mapping[str, str]) -> str:
    """A provider callback's token: the bearer token, else ``X-Callback-Token``
    (for providers that cannot set ``Authorization``)."""
    auth = headers.get("Authorization", "")
    return bearer(auth) if auth.startswith(BEARER) else headers.get("X-Callback-Token", "")


def token_matches(given: str, expected: str | None) -> bool:
    """``given`` is ``expected``, compared in constant time; never when no
    token is expected. surrogateescape: a non-UTF-8 byte in a header is a
    wrong token, not an error."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())
