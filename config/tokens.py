"""Secret tokens: the one constant-time check every HTTP route and command
uses for a bearer or callback token (admin routes, the console's admin
actions, ``scenetrigger config``, provider callbacks, inbound opt-outs), and
the one admin-token model (:class:`AdminTokens`), and the signatures with an
expiry that browsers carry (on-site slots, inbox tokens) with their one
expiry check (:func:`refuse_signed_until`). Closed by default: with no
token configured nothing matches."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

BEARER = "Bearer "
# One variable per role. Server (who may): name=token pairs, comma-separated,
# each admin by name (a config version's author). Client (who I am): the
# caller's own token, for `scenetrigger config push|rollback`.
ADMIN_TOKENS_ENV = "SCENETRIGGER_ADMIN_TOKENS"
CLIENT_TOKEN_ENV = "SCENETRIGGER_TOKEN"  # noqa: S105 - a variable name
# Deprecated server variable: one token, named `admin`; still read, with a warning.
ADMIN_TOKEN_ENV = "SCENETRIGGER_ADMIN_TOKEN"  # noqa: S105 - a variable name
# The catalog feed's own token (serve's POST /catalog): a shop's product
# system gets this one, not an admin token.
CATALOG_TOKEN_ENV = "SCENETRIGGER_CATALOG_TOKEN"  # noqa: S105 - a variable name
SINGLE_ADMIN = "admin"  # the name of the lone $SCENETRIGGER_ADMIN_TOKEN
ADMIN_TOKENS_HINT = f"set {ADMIN_TOKENS_ENV} (name=token,...)"
# The shop backend's credential for identity statements (docs/security.md,
# "Identity"): a bearer token, and the key of an identify event's signature.
# Never the collector's token, which every browser holds.
IDENTIFY_TOKEN_ENV = "SCENETRIGGER_IDENTIFY_TOKEN"  # noqa: S105 - a variable name
IDENTIFY_SIG_FIELD = "identify_sig"

_log = logging.getLogger(__name__)


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


def identify_signature(secret: str, user_id: str, known_id: str, ts: int) -> str:
    """The backend's signature of ``identify user_id -> known_id`` at ``ts``:
    ``hex(HMAC-SHA256(secret, "identify\n" + user_id + "\n" + known_id + "\n" + str(ts)))``
    (UTF-8), sent as the event's ``identify_sig`` field."""
    message = f"identify\n{user_id}\n{known_id}\n{ts}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def identify_signed(fields: Mapping[str, object], secret: str | None) -> bool:
    """An identify event's fields carry a valid :func:`identify_signature`
    (constant-time); never without a secret."""
    sig, user, known, ts = (fields.get(IDENTIFY_SIG_FIELD), fields.get("user_id"),
                            fields.get("known_id"), fields.get("ts"))
    if not (secret and isinstance(sig, str) and isinstance(user, str)
            and isinstance(known, str) and type(ts) is int):
        return False
    return token_matches(sig, identify_signature(secret, user, known, ts))


@dataclass(frozen=True)
class AdminTokens:
    """Who may use an admin route or command: ``$SCENETRIGGER_ADMIN_TOKENS``
    (``name=token`` pairs, comma-separated) and ``$SCENETRIGGER_ADMIN_TOKEN``
    (the name ``admin``), both at once if both are set. Empty: everything is
    refused."""

    named: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AdminTokens:
        environ = os.environ if env is None else env
        named: list[tuple[str, str]] = []
        for pair in environ.get(ADMIN_TOKENS_ENV, "").split(","):
            name, _, secret = pair.strip().partition("=")
            if name.strip() and secret.strip():
                named.append((name.strip(), secret.strip()))
        single = environ.get(ADMIN_TOKEN_ENV, "")
        if single:
            _log.warning("%s is deprecated: set %s=%s=<token> instead (the same admin)",
                         ADMIN_TOKEN_ENV, ADMIN_TOKENS_ENV, SINGLE_ADMIN)
            named.append((SINGLE_ADMIN, single))
        return cls(tuple(named))

    @classmethod
    def single(cls, token: str) -> AdminTokens:
        """One unnamed token (``admin``); none when ``token`` is empty."""
        return cls(((SINGLE_ADMIN, token),) if token else ())

    def __bool__(self) -> bool:
        return bool(self.named)

    def name_of(self, given: str) -> str | None:
        """The name of the token ``given`` is, or None. Every token is
        compared, so the time says nothing about which (or whether) one matched."""
        found = None
        for name, secret in self.named:
            if token_matches(given, secret) and found is None:
                found = name
        return found


# The longest a signature that carries an expiry may live (exp at most this
# far ahead of serve's clock), for slots and inbox tokens alike: a leaked page
# URL or token reads its user's data for a day at most.
SIG_MAX_TTL_S = 86_400
SIG_TTL_S = 3_600  # what `scenetrigger slot-sig` and `inbox-token` sign for unless told
MAX_EXP_CHARS = 12  # unix seconds until the year 33658


@dataclass(frozen=True)
class Refusal:
    """Why a signature with an expiry is refused: ``reason`` is the stable,
    machine-readable word (docs/security.md), ``error`` says it to a person."""

    status: int  # 400: the request is malformed; 403: it is not valid now
    reason: str  # exp_missing, exp_malformed, bad_sig, expired, exp_too_far
    error: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "reason": self.reason}


def refuse_signed_until(sig: str, exp_text: str | None, now_s: int,
                        expected: Callable[[int], str | None]) -> Refusal | None:
    """The one expiry check of slots and inbox tokens: None when ``sig`` is
    ``expected(exp)`` (constant-time) and ``exp`` is neither past nor more
    than :data:`SIG_MAX_TTL_S` ahead of ``now_s``; else the refusal.
    ``expected`` returns None when no secret is configured: nothing matches.
    The signature is checked before the clock, so a forged request learns
    nothing about time."""
    if exp_text is None or exp_text == "":
        return Refusal(400, "exp_missing", "exp (unix seconds) is required with the "
                                           "signature: it covers the user and exp")
    if not (len(exp_text) <= MAX_EXP_CHARS and exp_text.isascii() and exp_text.isdigit()):
        return Refusal(400, "exp_malformed", "exp must be unix seconds (digits only)")
    exp = int(exp_text)
    if not token_matches(sig, expected(exp)):
        return Refusal(403, "bad_sig", "bad signature for this user and exp")
    if exp < now_s:
        return Refusal(403, "expired", f"expired at exp={exp} ({now_s - exp} s ago)")
    if exp - now_s > SIG_MAX_TTL_S:
        return Refusal(403, "exp_too_far", f"exp={exp} is {exp - now_s} s ahead; at most "
                                           f"{SIG_MAX_TTL_S} s")
    return None


SLOT_SECRET_ENV = "SCENETRIGGER_SLOT_SECRET"  # noqa: S105 - a variable name


def slot_signature(secret: str, user_id: str, exp: int) -> str:
    """The shop backend's statement that this browser is ``user_id`` until
    ``exp`` (unix seconds), for ``GET /slots`` (docs/security.md, "On-site
    slots"): ``hex(HMAC-SHA256(secret, "slot\\n" + user_id + "\\n" + str(exp)))``
    (UTF-8; its own prefix: never an inbox token or an identify signature)."""
    message = f"slot\n{user_id}\n{exp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def slot_query(secret: str, user_id: str, exp: int) -> dict[str, str]:
    """The query parameters of a signed ``GET /slots`` (and the snippet's
    ``data-user``, ``data-exp``, ``data-sig``) for ``user_id`` until ``exp``."""
    return {"user": user_id, "exp": str(exp), "sig": slot_signature(secret, user_id, exp)}


INBOX_SECRET_ENV = "SCENETRIGGER_INBOX_SECRET"  # noqa: S105 - a variable name


def inbox_signature(secret: str, user_id: str, exp: int) -> str:
    """The shop backend's statement that this browser may read ``user_id``'s
    inbox until ``exp`` (unix seconds): ``hex(HMAC-SHA256(secret, "inbox\\n" +
    user_id + "\\n" + str(exp)))`` (UTF-8; its own prefix, as the slot's)."""
    message = f"inbox\n{user_id}\n{exp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def inbox_token(secret: str, user_id: str, exp: int) -> str:
    """The bearer token of ``GET /inbox/{user_id}`` and ``POST .../ack``:
    ``EXP.SIG``, ``exp`` in decimal digits, ``SIG`` :func:`inbox_signature`."""
    return f"{exp}.{inbox_signature(secret, user_id, exp)}"


def legacy_inbox_token(secret: str, user_id: str) -> str:
    """The old inbox token, ``hex(HMAC-SHA256(secret, user_id))``: it never
    expires. Deprecated: ``serve`` accepts it only with
    ``--inbox-legacy-tokens`` (docs/security.md, "Inbox tokens")."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()
