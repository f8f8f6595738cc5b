"""``scenetrigger export-user USER``: everything held about a user in Redis,
as JSON (an access request): every key with its value, by kind, the journey
state, deferred messages and dead-letter entries; with ``--broker`` and
``--app-id`` also the engine state the worker holds for the user (the
newest value of the user's key in the state table's changelog). What Kafka
topics still hold until their retention is listed in docs/audiences.md."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from scenetrigger.cli.ops.erase import add_common, eraser_for


def register(sub: Any) -> None:
    parser = sub.add_parser("export-user", help="write everything held about a user as JSON")
    add_common(parser)
    parser.add_argument("--broker", help="Kafka bootstrap: also the worker's engine state")
    parser.add_argument("--app-id", help="the worker's --app-id (its changelog "
                                         "APP-user-state-changelog)")
    parser.add_argument("--out", help="write here instead of stdout")
    parser.add_argument("--json", action="store_true", help="one line (default: indented)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from scenetrigger.cli.ops.users import run_async

    data = run_async(_main(args), args.redis_url)
    # The profile keeps some maps by number (the engagement curve by hour of week).
    text = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | (0 if args.json else orjson.OPT_INDENT_2))
    if args.out:
        with open(args.out, "wb") as out:
            out.write(text + b"\n")
        print(f"export-user: {sum(len(v) for v in data['keys'].values()):,} keys written to "
              f"{args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text.decode() + "\n")
    return 0


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from channels.redis_client import redis_client, redis_url_or_env

    client = redis_client(redis_url_or_env(args.redis_url), decode_responses=True)
    try:
        data: dict[str, Any] = await eraser_for(args, client).export(args.user)
    finally:
        await client.aclose()
    if args.broker and args.app_id:
        data["engine_state"] = await engine_state(args.broker, args.app_id, args.user)
    return data


async def engine_state(broker: str, app_id: str, user_id: str) -> dict[str, Any] | None:
    """The user's newest state in the worker's changelog (None: none, or erased)."""
    from agents.export import topic_records
    from agents.stored_state import unpack_state
    from agents.topics import bootstrap_servers
    from triggers.state import UserState

    key = user_id.encode()
    newest: bytes | None = None
    async for record in topic_records(bootstrap_servers(broker),
                                      f"{app_id}-user-state-changelog"):
        if record.key == key:
            newest = record.value
    if newest is None:
        return None
    offset, raw = unpack_state(newest)
    state = UserState.decode(raw)
    return {"applied_offset": offset, "max_ts": state.max_ts,
            "windows": {scene: {key: {"when": w.when, "unless": w.unless,
                                      "last_fire": w.last_fire} for key, w in keys.items()}
                        for scene, keys in state.windows.items()},
            "timer": {scene: list(armed) for scene, armed in state.timer.items()},
            "fires": state.fires,
            "profile": {name: getattr(state.profile, name)
                        for name in sorted(state.profile.__slots__)}}
