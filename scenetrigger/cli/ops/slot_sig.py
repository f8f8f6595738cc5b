"""``scenetrigger slot-sig USER``: the signed query of ``GET /slots`` for one
visitor (``user=...&exp=...&sig=...``, :func:`config.tokens.slot_query`) under
``$SCENETRIGGER_SLOT_SECRET``: what a shop backend writes into the page it
renders for that visitor, here for a try-out or a support case (docs/ads.md,
"The request and the answer")."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any
from urllib.parse import urlencode

import orjson

from config.clock import wall_ms
from config.tokens import SLOT_SECRET_ENV, SLOT_SIG_MAX_TTL_S, SLOT_SIG_TTL_S, slot_query
from scenetrigger.cli.support import duration
from triggers.errors import SceneTriggerError


def register(sub: Any) -> None:
    parser = sub.add_parser("slot-sig", help="the signed user/exp/sig of GET /slots for a "
                                             "visitor ($SCENETRIGGER_SLOT_SECRET)")
    parser.add_argument("user", help="the visitor's id (logged in or anonymous)")
    parser.add_argument("--ttl", type=duration, default=SLOT_SIG_TTL_S * 1000,
                        metavar="DURATION",
                        help=f"valid for this long from now (default 1h; at most "
                             f"{SLOT_SIG_MAX_TTL_S // 3600}h, what serve accepts)")
    parser.add_argument("--exp", type=int, metavar="UNIX_SECONDS",
                        help="valid until this time instead of --ttl")
    parser.add_argument("--json", action="store_true", help="one JSON object, not a query")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    secret = os.environ.get(SLOT_SECRET_ENV, "")
    if not secret:
        raise SceneTriggerError(f"set {SLOT_SECRET_ENV}: the secret serve checks slots with")
    now_s = wall_ms() // 1000
    exp = args.exp if args.exp is not None else now_s + args.ttl // 1000
    if exp - now_s > SLOT_SIG_MAX_TTL_S:  # serve would refuse it: say so now
        raise SceneTriggerError(f"exp {exp} is {exp - now_s} s ahead; serve accepts at most "
                                f"{SLOT_SIG_MAX_TTL_S} s")
    if exp < now_s:  # still printed: a past vector is what a test or a doc wants
        print(f"scenetrigger: exp {exp} is past: serve refuses it (expired)", file=sys.stderr)
    query = slot_query(secret, args.user, exp)
    print(orjson.dumps(query).decode() if args.json else urlencode(query))
    return 0
