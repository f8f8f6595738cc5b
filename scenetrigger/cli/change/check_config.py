"""``scenetrigger check-config FILE``: every error and warning at once, each
with file, line, scene (or section) and field; or a summary of what the config
does (scenes with their filters, strategies). ``--json`` for CI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from config.check import Problem, Report
from config.loader import check_text
from config.models import AppConfig
from config.scene_models import UserModel
from config.strategy_models import StrategyModel
from triggers.durations import format_duration_ms
from triggers.kinds import kind_of
from triggers.scenes import Scene


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "check-config", help="validate a config file",
        description="Validate a config: every error and warning with its line, or a summary.")
    parser.add_argument("file", help="YAML or JSON config")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: ok, errors, warnings, scenes, strategies")
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    catalog = parser.add_mutually_exclusive_group()
    catalog.add_argument("--catalog", help="the products file deliver reads (--catalog): "
                                           "check that variants showing products get some")
    catalog.add_argument("--redis-url", help="the Redis deliver reads its catalog from "
                                             "(`scenetrigger catalog load`): the same check")
    parser.set_defaults(run=run)


def check_file(path: str, catalog: str | None = None, redis_url: str | None = None) -> Report:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return Report(None, [Problem(f"cannot read {path}: {exc.strerror or exc}")], [])
    except UnicodeDecodeError as exc:
        return Report(None, [Problem(f"{path} is not UTF-8 text: {exc}")], [])
    report = check_text(text, source=path)
    if report.config is not None:
        from config.check import Doc
        from config.reach import catalog_problems
        from config.yaml_load import line_map, safe_load_unique

        source, products = _catalog(report.config, catalog, redis_url)
        found = catalog_problems(report.config, safe_load_unique(text), Doc(path,
                                 line_map(text)), source, products)
        report.warnings = sorted([*report.warnings, *found],
                                 key=lambda p: (p.file or "", p.line or 0))
    return report


def _catalog(config: AppConfig, path: str | None, redis_url: str | None) -> tuple[str | None,
                                                                                   int]:
    """Where products come from (None: not given) and whether it holds any."""
    if path is not None:
        from channels.content.catalog import read_products

        return path, len(read_products(path))
    if redis_url is None:
        return None, 0
    import asyncio

    from redis.asyncio import Redis

    from scenetrigger.demo.live import redacted

    async def count() -> int:
        client = Redis.from_url(redis_url)
        try:
            match = f"{config.delivery.redis_prefix}cat:p:*"
            async for _ in client.scan_iter(match=match, count=1000):
                return 1
            return 0
        finally:
            await client.aclose()

    return f"at {redacted(redis_url)}", asyncio.run(count())


def run(args: argparse.Namespace) -> int:
    report = check_file(args.file, args.catalog, args.redis_url)
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    if args.json:
        sys.stdout.write(orjson.dumps(as_json(args.file, report),
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
        return 1 if failed else 0
    if report.errors:
        print(f"{args.file}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)",
              file=sys.stderr)
        for problem in report.errors:
            print(f"  - {problem}", file=sys.stderr)
    if report.warnings:
        print(f"{args.file}: {len(report.warnings)} warning(s)", file=sys.stderr)
        for problem in report.warnings:
            print(f"  - warning: {problem}", file=sys.stderr)
    if report.config is not None:
        print(summary(args.file, report.config))
    return 1 if failed else 0


def as_json(path: str, report: Report) -> dict[str, Any]:
    config = report.config
    return {
        "file": path, "ok": not report.errors,
        "errors": [p.as_json() for p in report.errors],
        "warnings": [p.as_json() for p in report.warnings],
        "scenes": [] if config is None else [
            {"name": s.name, "kind": s.kind,
             "summary": describe(s), "user": describe_user(config.scenes[s.name].user)}
            for s in config.scene_list()],
        "strategies": [] if config is None else [
            {"name": n, "entry": describe_entry(m), "steps": [st.kind for st in m.steps]}
            for n, m in config.strategies.all_journeys().items()],
    } | ({"audiences": [
        {"name": a.name, "summary": a.describe(), "journey": a.journey, "consent": a.consent}
        for a in config.audience_list()]} if config is not None and config.audiences else {})


def summary(path: str, config: AppConfig) -> str:
    scenes = config.scene_list()
    journeys = config.strategies.all_journeys()
    lines = [f"{path}: OK, {len(scenes)} scene(s), {len(journeys)} strategy(ies)"]
    for scene in scenes:
        lines.append(f"  {scene.name:<28} {describe(scene)}")
        user = describe_user(config.scenes[scene.name].user)
        if user:
            lines.append(f"  {'':<28}   only users: {user}")
        timing = config.scenes[scene.name].send_time
        if timing is not None and timing.delay_for(scene.kind):
            lines.append(f"  {'':<28}   send time: best hour within "
                         f"{format_duration_ms(timing.delay_for(scene.kind))}")
    for name, model in journeys.items():
        steps = " > ".join(step.kind for step in model.steps)
        lines.append(f"  strategy {name:<19} on {describe_entry(model)}: {steps}")
    for audience in config.audience_list():
        lines.append(f"  audience {audience.name:<19} {audience.describe()}")
    return "\n".join(lines)


def describe(scene: Scene) -> str:
    return kind_of(scene).describe(scene)


def describe_user(user: UserModel | None) -> str:
    """A scene's user filter in words (empty: everyone)."""
    if user is None:
        return ""
    parts = []
    if user.tags is not None:
        for group in ("all", "any", "none"):
            tags = getattr(user.tags, group)
            if tags:
                parts.append(f"tags {group} of {', '.join(tags)}")
    if user.segment is not None:
        parts.append(f"segment in {', '.join(user.segment.in_)}")
    if user.style is not None:
        parts.append(f"style in {', '.join(user.style.in_)}")
    return "; ".join(parts)


def describe_entry(model: StrategyModel) -> str:
    entry = model.entry
    parts = []
    if entry.scene:
        parts.append(f"scene {' or '.join(entry.scene)}")
    if entry.tags is not None:
        for group in ("all", "any", "none"):
            tags = getattr(entry.tags, group)
            if tags:
                parts.append(f"tags {group} of {', '.join(tags)}")
    if entry.segment:
        parts.append(f"segment {' or '.join(entry.segment)}")
    return ", ".join(parts)
