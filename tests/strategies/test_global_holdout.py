"""The global control group (issue 24.2) on the rees46 sample: ``replay
--deliver dry-run`` with ``global_share: 0.2`` and a scene share of 0.1, then
``report``. Groups are recomputed here with hashlib from the documented
formula (``blake2b(salt \\x1f name \\x1f user) < share``, the global name
``*``), and the "all marketing vs none" row's figures brute force from the
CSV: a user enters at their first trigger and converts with any purchase
after it."""

from __future__ import annotations

import calendar
import csv
import hashlib
import math
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest

from config.loader import DEFAULT_CONFIG_PATH
from config.strategy_models import ControlModel
from scenetrigger.cli.main import main
from strategies.attribution import in_control
from strategies.holdout import GlobalHoldout
from tests.paths import REES46_SAMPLE

GLOBAL, SCENE_SHARE = 0.2, 0.1


def _bucket(name: str, user: str) -> float:
    digest = hashlib.blake2b(f"scenetrigger\x1f{name}\x1f{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _ts(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S UTC")) * 1000


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("global")
    config = tmp / "config.yaml"
    config.write_text(DEFAULT_CONFIG_PATH.read_text() + "\nstrategies:\n  control: "
                      f"{{share: {SCENE_SHARE}, global_share: {GLOBAL}}}\n")
    out, report = tmp / "triggers.jsonl", tmp / "report.json"
    assert main(["replay", str(REES46_SAMPLE), "--config", str(config), "--deliver", "dry-run",
                 "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out), str(REES46_SAMPLE), "--config", str(config),
                 "--include", "reactivation", "--json", str(report)]) == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return lines, orjson.loads(report.read_bytes())


def test_replay_holds_the_global_group_out_of_every_scene(
        run: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    lines, _ = run
    held = [t for t in lines if _bucket("*", t["user_id"]) < GLOBAL]
    assert held and len(held) < len(lines)
    for t in lines:
        if _bucket("*", t["user_id"]) < GLOBAL:
            assert (t["group"], t["delivery"], t["reason"]) == ("global", "suppressed",
                                                                 "global_control")
        elif _bucket(t["scene"], t["user_id"]) < SCENE_SHARE:
            assert (t["group"], t["reason"]) == ("control", "control")
        else:
            assert "group" not in t


def test_report_row_all_marketing_vs_none(
        run: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    lines, data = run
    first: dict[str, int] = {}
    for t in lines:
        first[t["user_id"]] = min(first.get(t["user_id"], t["ts"]), t["ts"])
    after: dict[str, list[float]] = defaultdict(list)
    with REES46_SAMPLE.open() as fh:
        for row in csv.DictReader(fh):
            user = row["user_id"]
            if row["event_type"] == "purchase" and user in first \
                    and _ts(row["event_time"]) > first[user]:
                after[user].append(float(row["price"]))
    arms: dict[bool, list[str]] = {True: [], False: []}
    for user in first:
        arms[_bucket("*", user) < GLOBAL].append(user)
    (row,) = [r for r in data["rows"] if r["kind"] == "global"]
    assert row["name"] == "all_marketing" and data["global_share"] == GLOBAL
    assert (row["treated"], row["control"]) == (len(arms[False]), len(arms[True]))
    assert row["triggered"] == len(lines)
    assert row["suppressed"] == {"global_control": sum(_bucket("*", t["user_id"]) < GLOBAL
                                                      for t in lines)}
    conv = {arm: sum(1 for u in users if after[u]) for arm, users in arms.items()}
    assert (row["converted_treated"], row["converted_control"]) == (conv[False], conv[True])
    assert row["revenue_control"] == pytest.approx(sum(sum(after[u]) for u in arms[True]),
                                                   abs=0.01)
    assert row["uplift"] == pytest.approx(conv[False] / len(arms[False])
                                          - conv[True] / len(arms[True]))
    assert row["uplift_per_user"] == pytest.approx(row["uplift"])  # one unit per user


def test_scene_and_strategy_units_exclude_the_global_group(
        run: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    lines, data = run
    rows = {(r["kind"], r["name"]): r for r in data["rows"]}
    for scene in {t["scene"] for t in lines}:
        mine = [t for t in lines if t["scene"] == scene]
        held = [t for t in mine if _bucket("*", t["user_id"]) < GLOBAL]
        row = rows[("scene", scene)]
        assert row["triggered"] == len(mine)
        assert row["suppressed"].get("global_control", 0) == len(held)
        assert row["treated"] + row["control"] == len(mine) - len(held)
        assert row["control"] == sum(1 for t in mine if t not in held
                                     and _bucket(scene, t["user_id"]) < SCENE_SHARE)
    entering = [t for t in lines if t["scene"] in ("repeat_view_no_purchase", "cart_abandonment")]
    users = {t["user_id"] for t in entering}
    marketed = {u for u in users if _bucket("*", u) >= GLOBAL}
    strategy = rows[("strategy", "reactivation")]
    assert strategy["suppressed"]["global_control"] == sum(
        1 for t in entering if t["user_id"] not in marketed)
    assert strategy["treated"] + strategy["control"] == len(marketed)
    assert strategy["control"] == sum(_bucket("reactivation", u) < SCENE_SHARE for u in marketed)


def test_holdouts_nest_under_the_global_group_and_are_orthogonal() -> None:
    """Among users outside the global group, a scene's and a strategy's
    holdouts each keep their share and overlap as independent draws."""
    control = ControlModel(share=0.3, global_share=0.2)
    users = [f"user-{i}" for i in range(30_000)]
    holdout = GlobalHoldout(control)
    rest = [u for u in users if not holdout.held({"user_id": u})]
    n = len(rest)
    assert abs(len(users) - n - 0.2 * len(users)) <= 5 * math.sqrt(len(users) * 0.16)
    scene = {u for u in rest if in_control(control, "cart_abandonment", u)}
    strategy = {u for u in rest if in_control(control, "reactivation", u)}
    for group in (scene, strategy):
        assert abs(len(group) - 0.3 * n) <= 5 * math.sqrt(n * 0.21)
    assert abs(len(scene & strategy) - 0.09 * n) <= 5 * math.sqrt(n * 0.09 * 0.91)
