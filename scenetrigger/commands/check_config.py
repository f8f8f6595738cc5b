"""``scenetrigger check-config FILE``: every error with scene and field, or a summary."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from config.loader import load_config
from triggers.durations import format_duration_ms
from triggers.errors import ConfigError
from triggers.scenes import AbsenceScene, ArrivalScene, RepeatScene


def register(sub: Any) -> None:
    parser = sub.add_parser("check-config", help="validate a config file")
    parser.add_argument("file", help="YAML or JSON config")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"{args.file}: {len(exc.problems)} error(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    scenes = config.scene_list()
    print(f"{args.file}: OK, {len(scenes)} scene(s)")
    for scene in scenes:
        print(f"  {scene.name:<28} {describe(scene)}")
    return 0


def describe(scene: RepeatScene | AbsenceScene | ArrivalScene) -> str:
    if isinstance(scene, RepeatScene):
        text = f"repeat  {scene.count}x within {format_duration_ms(scene.within_ms)}"
        if scene.per:
            text += f" per {scene.per}"
        if scene.unless:
            text += " unless ..."
    elif isinstance(scene, AbsenceScene):
        text = f"absence after {format_duration_ms(scene.after_ms)}"
        if scene.cancel:
            text += " unless cancelled"
    else:
        text = "arrival"
        if scene.per:
            text += f" per {scene.per}"
    cooldown = getattr(scene, "cooldown_ms", None)
    if cooldown is not None:
        text += f", cooldown {format_duration_ms(cooldown)}"
    return text
