"""``scenetrigger report REPLAY_OUTPUT EVENTS --by channel --spend FILE``:
return per ad sink and audience (:mod:`strategies.ads_roi`). The
membership records are the replay output's ``"kind": "audience"`` lines;
conversions are the events' purchases. Spend comes from ``--spend FILE``,
else from what ``audiences import-spend`` stored in Redis."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator

from channels.ads.membership import MembershipError, read_jsonl
from config.models import AppConfig
from scenetrigger.cli.ops.report import write_report
from scenetrigger.runtime.sources import open_input, pick_format, read_events
from strategies.ads_roi import Spend, channel_json, channel_report, read_spend, render_channels
from triggers.audiences.record import AudienceChange
from triggers.errors import SceneTriggerError
from triggers.events import Event


def run_channels(args: argparse.Namespace, config: AppConfig, window_ms: int) -> int:
    if not config.ads.sinks:
        raise SceneTriggerError("--by channel needs a config with ads: sinks (docs/ads.md)")
    spend: list[Spend] = [] if args.spend else _imported(args, config)
    for path in args.spend:
        try:
            with open(path, "rb") as fh:
                spend.extend(read_spend(path, fh.read()))
        except OSError as exc:
            raise SceneTriggerError(f"cannot read {path}: {exc.strerror or exc}") from None
    routes = {name: dict(model.audiences) for name, model in config.ads.sinks.items()}
    with open_input(args.triggers) as (stream, _size):
        members = list(_members(iter(stream), args.triggers))
    with open_input(args.events) as (stream, _size):
        fmt, lines = pick_format(args.format, stream, args.events)
        events = [item for _n, item in read_events(lines, fmt, config.engine.max_line_bytes,
                                                     config.id_limits())
                  if isinstance(item, Event)]
    rows = channel_report(routes, members, events, spend, holdout=config.ads.holdout,
                          salt=config.strategies.control.salt, window_ms=window_ms)
    report = channel_json(rows, holdout=config.ads.holdout, window_ms=window_ms)
    write_report(args, report, lambda _: render_channels(rows))
    return 0


def _members(lines: Iterator[bytes], name: str) -> Iterator[AudienceChange]:
    for number, item in read_jsonl(lines):
        if isinstance(item, MembershipError):
            raise SceneTriggerError(f"{name}:{number}: {item}")
        yield item


def _imported(args: argparse.Namespace, config: AppConfig) -> list[Spend]:
    """The spend ``audiences import-spend`` stored (Redis at --redis-url or
    $SCENETRIGGER_REDIS_URL); with neither, none (a report offline)."""
    from channels.redis_client import REDIS_URL_ENV, redis_client
    from channels.transports.registry import redis_url_or_env
    from scenetrigger.cli.ops.users import run_async
    from strategies.ads_spend import RedisSpendStore

    if not (args.redis_url or os.environ.get(REDIS_URL_ENV)):
        print("scenetrigger: no spend (give --spend FILE, or --redis-url where "
              "`audiences import-spend` stored it)", file=sys.stderr)
        return []

    async def read() -> list[Spend]:
        client = redis_client(redis_url_or_env(args.redis_url))
        try:
            return await RedisSpendStore(client, config.delivery.redis_prefix).all()
        finally:
            await client.aclose()

    return run_async(read(), args.redis_url)
