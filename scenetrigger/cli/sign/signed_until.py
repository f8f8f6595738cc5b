"""What ``scenetrigger slot-sig`` and ``scenetrigger inbox-token`` share: the
``--ttl``/``--exp`` of a signature with an expiry, bounded as ``serve``
bounds it (:func:`config.tokens.refuse_signed_until`), and the secret."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from config.clock import wall_ms
from config.tokens import SIG_MAX_TTL_S, SIG_TTL_S
from scenetrigger.cli.support import duration
from triggers.errors import SceneTriggerError


def ttl(text: str) -> int:
    """``--ttl``: a duration with its unit (``30m``, ``1h``). A bare number,
    milliseconds elsewhere in the CLI, is refused here: ``--ttl 3600`` meant
    as seconds would mint a credential dead in 3.6 s."""
    if text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"give --ttl a unit ({text}s, {text}m or "
                                         f"{text}h): a bare number is ambiguous here")
    return duration(text)


def add_arguments(parser: Any) -> None:
    parser.add_argument("--ttl", type=ttl, default=SIG_TTL_S * 1000, metavar="DURATION",
                        help=f"valid for this long from now (default 1h; at most "
                             f"{SIG_MAX_TTL_S // 3600}h, what serve accepts)")
    parser.add_argument("--exp", type=int, metavar="UNIX_SECONDS",
                        help="valid until this time instead of --ttl")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def secret(env_name: str, what: str) -> str:
    value = os.environ.get(env_name, "")
    if not value:
        raise SceneTriggerError(f"set {env_name}: the secret serve checks {what} with")
    return value


def expiry(args: argparse.Namespace) -> int:
    """``exp`` in unix seconds: ``--exp``, else now + ``--ttl``. Refused when
    serve would refuse it as too far; a past one is printed with a warning
    (a past vector is what a test or a doc wants)."""
    now_s = wall_ms() // 1000
    exp: int = args.exp if args.exp is not None else now_s + args.ttl // 1000
    if exp - now_s > SIG_MAX_TTL_S:
        raise SceneTriggerError(f"exp {exp} is {exp - now_s} s ahead; serve accepts at most "
                                f"{SIG_MAX_TTL_S} s")
    if exp < now_s:
        print(f"scenetrigger: exp {exp} is past: serve refuses it (expired)", file=sys.stderr)
    return exp
