"""``scenetrigger report TRIGGERS EVENTS``: the funnel and measured uplift of
every scene and strategy, from a replay's output and the events it replayed
(plus any feedback events: delivered, opened, clicked, shared).

Scene control groups come from the replay lines' marks when ``replay
--deliver`` wrote them, else from the hash; a control share (``--control-share``
or the config's) that would put marked users in other groups is warned about
on stderr, and the marks are used."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from config.loader import load_config
from config.strategy_models import ControlModel, load_strategy_file, resolve_include
from scenetrigger.runtime.sources import FORMATS, open_input, pick_format, read_events
from strategies.intervals import METHOD
from strategies.kpis import Kpis, render_kpis
from strategies.reporting import (
    SPLITS,
    ReportOptions,
    build_report,
    mark_disagreements,
    render_table,
    scene_goals,
)
from strategies.step_funnel import StepFunnels, render_journey
from triggers.durations import parse_duration_ms
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import Event


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "report", help="funnel and uplift per scene/strategy/variant from a replay's output")
    parser.add_argument("triggers", help="replay output (JSONL trigger lines)")
    parser.add_argument("events", help="the events replayed (+ feedback events), any format")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="events format")
    parser.add_argument("--config", help="config file (default: the shipped scenes)")
    parser.add_argument("--include", action="append", default=[],
                        help="also run this strategies file or shipped name (repeatable)")
    parser.add_argument("--window", help="attribution window (default: the config's, 24h)")
    parser.add_argument("--control-share", type=float,
                        help="control share for every scene and strategy (default: config's)")
    parser.add_argument("--global-share", type=float,
                        help="global control group share, held out of all marketing "
                             "(default: the config's strategies.control.global_share)")
    parser.add_argument("--by", type=_splits, default=(),
                        help="split scene rows by segment and/or style (comma-separated; "
                             "needs a replay --deliver output, whose lines say them); or "
                             "'channel': return per ad sink and audience (docs/ads.md)")
    parser.add_argument("--spend", action="append", default=[], metavar="FILE",
                        help="with --by channel: ad spend per channel, day and audience "
                             "(CSV or JSON; repeatable; default: what `audiences "
                             "import-spend` stored in Redis)")
    parser.add_argument("--redis-url", default=None,
                        help="with --by channel and no --spend: the Redis the spend was "
                             "imported into (default: $SCENETRIGGER_REDIS_URL or the local one)")
    parser.add_argument("--decisions", action="append", default=[], metavar="FILE",
                        help="also count a decision log (replay --decisions, or export "
                             "PREFIX.decisions): every kind, per scene and outcome")
    parser.add_argument("--kpis", action="store_true",
                        help="the shop's KPIs instead of the funnel: registration, add-to-cart, "
                             "first-purchase and repurchase rates, weekly purchase retention; "
                             "split by segment, style and the global control group")
    parser.add_argument("--journey", metavar="NAME",
                        help="the step funnel of strategy NAME instead of the funnel: per step "
                             "entered, sent, suppressed by reason, opened, clicked, converted, "
                             "exited by reason (with --decisions: delivery refusals too)")
    parser.add_argument("--experiment", nargs="?", const="latest", metavar="VERSION",
                        help="compare a config experiment's arms instead (the candidate "
                             "VERSION, default the newest experiment in --config-store): users "
                             "by hash, conversion with its interval, the fixed-horizon decision")
    parser.add_argument("--config-store", metavar="STORE",
                        help="with --experiment: 'kafka' (PREFIX.config on --broker) or a "
                             "directory")
    parser.add_argument("--broker", help="with --config-store kafka (default $SCENETRIGGER_KAFKA)")
    parser.add_argument("--topic-prefix", help="with --config-store kafka: PREFIX.config")
    parser.add_argument("--send-time", action="store_true",
                        help="the lift of send-time optimisation instead of the funnel: open "
                             "and conversion rates of sends held for the best hour over the "
                             "holdout sent at once, with 95 %% intervals (docs/timing.md)")
    parser.add_argument("--json", dest="json_out", help="write the report as JSON here "
                                                        "('-' for stdout instead of the table)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    section = config.strategies
    journeys = dict(section.all_journeys())
    for ref in args.include:
        try:
            journeys.update(load_strategy_file(resolve_include(ref)))
        except ValueError as exc:
            raise SceneTriggerError(str(exc)) from None
    control = section.control
    if args.control_share is not None:
        if not 0.0 <= args.control_share <= 0.9:
            raise SceneTriggerError("--control-share must be between 0 and 0.9")
        control = control.model_copy(update={"share": args.control_share, "per": {}})
    if args.global_share is not None:
        if not 0.0 <= args.global_share <= 0.5:
            raise SceneTriggerError("--global-share must be between 0 and 0.5")
        control = control.model_copy(update={"global_share": args.global_share})
    window = section.attribution.window
    if args.window is not None:
        try:
            window = parse_duration_ms(args.window)
        except ValueError as exc:
            raise SceneTriggerError(f"--window: {exc}") from None
    if args.by == ("channel",):
        from scenetrigger.cli.ops.report_channels import run_channels

        return run_channels(args, config, window)
    options = ReportOptions(window, control, journeys, args.by, tuple(config.scenes),
                            scene_goals(config))
    if args.journey is not None and args.journey not in journeys:
        raise SceneTriggerError(f"--journey: no strategy named {args.journey!r} (have "
                                f"{', '.join(sorted(journeys)) or 'none'}; --include adds one)")
    triggers = list(_read_triggers(args.triggers))
    if args.by and triggers and not any(line.get(name) for line in triggers
                                        for name in args.by):
        print(f"report: warning: no line of {args.triggers} carries a "
              f"{' or '.join(args.by)} (only `replay --deliver dry-run|live` lines do): "
              "every row shows '-'", file=sys.stderr)
    differ, marked = mark_disagreements(triggers, control)
    if differ:
        source = " and ".join(f"--{name.replace('_', '-')} {value}" for name, value in
                              (("control_share", args.control_share),
                               ("global_share", args.global_share)) if value is not None
                              ) or "the config's control shares"
        print(f"report: warning: {differ} of {marked} marked trigger lines are in another "
              f"control group under {source}; the replay's marks are used for them",
              file=sys.stderr)
    with open_input(args.events) as (stream, _size):
        fmt, lines = pick_format(args.format, stream, args.events)
        events = _events(read_events(lines, fmt, config.engine.max_line_bytes,
                                     config.id_limits()))
        if args.kpis:
            return _kpis(args, triggers, events, control)
        if args.experiment is not None:
            return _experiment(args, triggers, events)
        if args.send_time:
            return _send_time(args, triggers, events, window)
        steps = StepFunnels() if args.journey is not None else None
        rows = build_report(triggers, events, options, steps)
    if steps is not None:
        steps.decisions(_decision_records(args.decisions))
        return _journey(args, steps.result(args.journey), window)
    report = {"window_ms": window, "control_share": control.share,
              "global_share": control.global_share, "intervals": METHOD,
              "scene_groups": {"marked": marked, "hashed": len(triggers) - marked,
                               "mark_disagreements": differ},
              "control_per": dict(control.per), "rows": [row.to_dict() for row in rows]}
    decisions = _decisions(args.decisions) if args.decisions else None
    if decisions is not None:
        report["decisions"] = decisions
    tables = [render_table(rows)] + ([] if decisions is None else [_render_decisions(decisions)])
    write_report(args, report, lambda _: "\n".join(tables))
    return 0


def _experiment(args: argparse.Namespace, triggers: list[dict[str, Any]],
                events: Iterator[Event]) -> int:
    import asyncio

    from scenetrigger.cli.config_follow import open_store
    from strategies.experiment_report import compare, render

    store = open_store(args.config_store, args.broker, args.topic_prefix)
    if store is None:
        raise SceneTriggerError("--experiment needs --config-store (where the versions are)")

    async def read() -> list[Any]:
        try:
            return await store.versions()
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                await close()

    result = compare(experiment_period(asyncio.run(read()), args.experiment), triggers, events)
    write_report(args, result, render)
    return 0


def experiment_period(versions: list[Any], wanted: str) -> Any:
    """The period of the candidate ``wanted`` (a number, or ``latest``)."""
    from strategies.experiment_report import Period

    tried = [v for v in versions if v.experiment is not None]
    found = tried[-1] if wanted == "latest" and tried else next(
        (v for v in tried if str(v.version) == wanted.lstrip("v")), None)
    if found is None:
        raise SceneTriggerError(f"--experiment: no experiment {wanted!r} in the store (have "
                                f"{', '.join(f'v{v.version}' for v in tried) or 'none'})")
    after = next((v for v in versions if v.version > found.version), None)
    spec = found.experiment
    return Period(found.version, spec.base, spec.share, found.time_ms,
                  None if after is None else after.time_ms, spec.horizon_ms)


def write_report(args: argparse.Namespace, result: dict[str, Any], text: Any) -> None:
    """``--json -``: the result as JSON on stdout; otherwise ``text(result)``
    printed, and the JSON written to the ``--json`` file when one is named."""
    if args.json_out == "-":
        sys.stdout.buffer.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        return
    print(text(result))
    if args.json_out:
        with open(args.json_out, "wb") as fh:
            fh.write(orjson.dumps(result, option=orjson.OPT_INDENT_2))


def _journey(args: argparse.Namespace, funnel: dict[str, Any], window: int) -> int:
    result = {"window_ms": window, "journey": funnel}
    write_report(args, result, lambda _: render_journey(funnel))
    return 0


def _decisions(paths: list[str]) -> dict[str, Any]:
    from channels.feedback.decisions import tally

    return tally(_decision_records(paths))


def _decision_records(paths: list[str]) -> Iterator[Any]:
    """Every record of the files through the one model (any version)."""
    from channels.feedback.decisions import DecisionRecord

    def records() -> Iterator[DecisionRecord]:
        for path in paths:
            try:
                fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except OSError as exc:
                raise SceneTriggerError(f"cannot read {path}: {exc.strerror or exc}") from None
            with fh:
                for number, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            yield DecisionRecord.decode(line)
                        except ValueError as exc:
                            raise SceneTriggerError(f"{path}:{number}: not a decision "
                                                    f"record: {exc}") from None

    return records()


def _render_decisions(counts: dict[str, Any]) -> str:
    out = [f"decisions: {counts['records']} record(s)"]
    out += [f"  {scene}: " + ", ".join(f"{k} {n}" for k, n in outcomes.items())
            for scene, outcomes in counts["scenes"].items()]
    if counts["consent"]:
        out.append("consent changes: " + ", ".join(f"{k} {n}"
                                                   for k, n in counts["consent"].items()))
    return "\n".join(out)


def _kpis(args: argparse.Namespace, triggers: list[dict[str, Any]], events: Iterator[Event],
          control: ControlModel) -> int:
    kpis = Kpis()
    for event in events:
        kpis.on_event(event)
    figures = kpis.result(triggers, control)
    result = {"global_share": control.global_share, "kpis": figures}
    write_report(args, result, lambda _: render_kpis(figures))
    return 0


def _send_time(args: argparse.Namespace, triggers: list[dict[str, Any]],
               events: Iterator[Event], window: int) -> int:
    from strategies.sendtime_lift import render_lift, send_time_lift

    rows = send_time_lift(triggers, events, window)
    result = {"window_ms": window, "intervals": METHOD, "rows": [r.to_dict() for r in rows]}
    write_report(args, result, lambda _: render_lift(rows, window))
    return 0


def _splits(text: str) -> tuple[str, ...]:
    """An argparse type: ``segment,style`` -> ``("segment", "style")``."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if names == ("channel",):
        return names
    unknown = [n for n in names if n not in SPLITS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"use {' and/or '.join(SPLITS)}, comma-separated, "
                                         "or channel alone")
    return names


def _events(records: Iterator[tuple[int, Event | EventRejected]]) -> Iterator[Event]:
    for _number, item in records:
        if isinstance(item, Event):
            yield item


def _read_triggers(path: str) -> Iterator[dict[str, Any]]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise SceneTriggerError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise SceneTriggerError(f"{path}:{number}: not JSON: {exc}") from None
            if not isinstance(record, dict) or not {"scene", "user_id", "ts"} <= record.keys() \
                    or type(record["ts"]) is not int:
                raise SceneTriggerError(f"{path}:{number}: not a trigger line "
                                        "(needs scene, user_id and an integer ts)")
            yield record
