"""``scenetrigger slot-sig USER``: the signed query of ``GET /slots`` for one
visitor (``user=...&exp=...&sig=...``, :func:`config.tokens.slot_query`) under
``$SCENETRIGGER_SLOT_SECRET``: what a shop backend writes into the page it
renders for that visitor, here for a try-out or a support case (docs/ads.md,
"The request and the answer")."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlencode

import orjson

from config.tokens import SLOT_SECRET_ENV, slot_query
from scenetrigger.cli.sign import signed_until


def register(sub: Any) -> None:
    parser = sub.add_parser("slot-sig", help="the signed user/exp/sig of GET /slots for a "
                                             "visitor ($SCENETRIGGER_SLOT_SECRET)")
    parser.add_argument("user", help="the visitor's id (logged in or anonymous)")
    signed_until.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    secret = signed_until.secret(SLOT_SECRET_ENV, "slots")
    query = slot_query(secret, args.user, signed_until.expiry(args))
    print(orjson.dumps(query).decode() if args.json else urlencode(query))
    return 0
