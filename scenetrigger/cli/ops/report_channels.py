"""``scenetrigger report REPLAY_OUTPUT EVENTS --by channel --spend FILE``:
return per ad sink and audience (:mod:`strategies.ads_roi`). The
membership records are the replay output's ``"kind": "audience"`` lines;
conversions are the events' purchases."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from channels.ads.membership import Membership, MembershipError, read_jsonl
from config.models import AppConfig
from scenetrigger.runtime.sources import open_input, pick_format, read_events
from strategies.ads_roi import Spend, channel_report, read_spend, render_channels
from triggers.errors import SceneTriggerError
from triggers.events import Event


def run_channels(args: argparse.Namespace, config: AppConfig, window_ms: int) -> int:
    if not config.ads.sinks:
        raise SceneTriggerError("--by channel needs a config with ads: sinks (docs/ads.md)")
    spend: list[Spend] = []
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
    report: dict[str, Any] = {"by": "channel", "window_ms": window_ms,
                              "holdout": config.ads.holdout,
                              "intervals": "Newcombe hybrid score, 95 %, on users",
                              "rows": [row.to_dict() for row in rows]}
    if args.json_out == "-":
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(render_channels(rows))
    if args.json_out:
        with open(args.json_out, "wb") as fh:
            fh.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


def _members(lines: Iterator[bytes], name: str) -> Iterator[Membership]:
    for number, item in read_jsonl(lines):
        if isinstance(item, MembershipError):
            raise SceneTriggerError(f"{name}:{number}: {item}")
        yield item
