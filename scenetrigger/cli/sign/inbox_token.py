"""``scenetrigger inbox-token USER``: the bearer token of ``GET /inbox/USER``
and ``POST /inbox/USER/ack`` (``EXP.SIG``, :func:`config.tokens.inbox_token`)
under ``$SCENETRIGGER_INBOX_SECRET``: what a shop backend mints for its
logged-in user, here for a try-out or a support case (docs/security.md,
"Inbox tokens")."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from config.tokens import INBOX_SECRET_ENV, inbox_token
from scenetrigger.cli.sign import signed_until


def register(sub: Any) -> None:
    parser = sub.add_parser("inbox-token", help="a user's expiring inbox token for GET /inbox "
                                                "($SCENETRIGGER_INBOX_SECRET)")
    parser.add_argument("user", help="the logged-in user's id")
    signed_until.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    secret = signed_until.secret(INBOX_SECRET_ENV, "inbox tokens")
    exp = signed_until.expiry(args)
    token = inbox_token(secret, args.user, exp)
    print(orjson.dumps({"user": args.user, "exp": str(exp), "token": token}).decode()
          if args.json else token)
    return 0
