"""``scenetrigger audiences import-spend FILE``: ad spend per platform (the
sink's name), day and audience, as CSV or JSON, checked row by row against
the config's ``ads:`` sinks and stored in Redis
(:class:`strategies.ads_spend.RedisSpendStore`) for ``report --by channel``.
Any bad row rejects the whole file, each bad row named with its line and
field: nothing is half-imported."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from channels.transports.registry import redis_url_or_env
from triggers.errors import SceneTriggerError


def register_import(actions: Any, common: argparse.ArgumentParser) -> None:
    parser = actions.add_parser(
        "import-spend", parents=[common],
        help="store ad spend (CSV or JSON: platform, day, audience, amount, currency) "
             "for report --by channel")
    parser.add_argument("file", metavar="FILE", help="CSV with a header, a JSON array or "
                                                     "JSON lines; - for stdin")
    parser.add_argument("--check", action="store_true", help="validate only; store nothing")
    parser.set_defaults(run=run_import_spend)


def run_import_spend(args: argparse.Namespace) -> int:
    from scenetrigger.cli.ops.audiences import _config
    from scenetrigger.cli.ops.users import run_async
    from scenetrigger.runtime.sources import open_input
    from strategies.ads_roi import read_spend_lines
    from strategies.ads_spend import RedisSpendStore, merge_days

    config = _config(args)
    try:
        with open_input(args.file) as (stream, _size):
            data = b"".join(stream)
    except OSError as exc:
        raise SceneTriggerError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    lines = read_spend_lines(args.file, data)
    rows = [row for _number, row in lines]
    unknown = []  # rows the report could never show: a typo, not spend
    for n, row in lines:
        sink = config.ads.sinks.get(row.channel)
        if sink is None:
            unknown.append(f"{args.file}:{n}: platform: {row.channel!r} is no ads sink")
        elif row.audience not in sink.audiences:
            unknown.append(f"{args.file}:{n}: audience: sink {row.channel} does not "
                           f"map {row.audience!r}")
    if unknown:
        raise SceneTriggerError("\n".join(unknown[:20]))
    days = merge_days(rows)
    written = 0
    if not args.check:
        async def store() -> int:
            from channels.redis_client import redis_client

            client = redis_client(redis_url_or_env(args.redis_url))
            try:
                return await RedisSpendStore(client, config.delivery.redis_prefix).put(rows)
            finally:
                await client.aclose()

        written = run_async(store(), args.redis_url)
    totals: dict[str, float] = {}
    for row in days.values():
        totals[row.currency] = totals.get(row.currency, 0.0) + row.spend
    summary = {"rows": len(rows), "days": len(days), "stored": written, "check": args.check,
               "totals": dict(sorted(totals.items()))}
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        verb = "checked (nothing stored)" if args.check else f"stored {written} days"
        print(f"{len(rows)} rows, {verb}; " + ", ".join(
            f"{amount:.2f} {currency or '(no currency)'}" for currency, amount in totals.items()))
    return 0

