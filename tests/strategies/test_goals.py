"""Goals (issue 24.3): ``goal: {event: ..., within: ...}`` on a strategy. A
user who meets it leaves the journey (exit reason ``goal``); the report
counts the exits per step and converts the strategy's units on the goal, in
the goal's window. The report figures on the rees46 sample are brute force
from the CSV and the trigger lines here."""

from __future__ import annotations

import calendar
import csv
import hashlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from config.strategy_models import StrategyModel
from scenetrigger.cli.main import main
from strategies.actions import ExitAction, SendAction
from strategies.model import digest_of
from tests.paths import REES46_SAMPLE
from tests.strategies.helpers import DAY, HOUR, T0, engine, trigger
from triggers.events import Event

GOAL_FILE = """
bring_back:
  entry: {scene: repeat_view_no_purchase}
  goal: {event: purchase, within: 7d}
  steps:
    - id: push_1
      send: {channel: push, content: reactivation_push_1}
    - id: wait_1
      wait: 2d
    - id: push_2
      send: {channel: push, content: reactivation_push_2}
"""


def _model(goal: dict[str, Any] | None) -> StrategyModel:
    raw: dict[str, Any] = {"entry": {"scene": "repeat_view_no_purchase"},
                           "steps": [{"id": "first", "send": {"channel": "push", "content": "c"}},
                                     {"id": "pause", "wait": "10d"},
                                     {"id": "second", "send": {"channel": "push", "content": "c"}}]}
    if goal is not None:
        raw["goal"] = goal
    return StrategyModel.model_validate(raw)


def _event(user: str, ts: int, kind: str, **fields: Any) -> Event:
    return Event(user, ts, kind, {"user_id": user, "ts": ts, "type": kind, **fields})


def test_a_user_who_meets_the_goal_leaves_the_journey() -> None:
    eng = engine({"j": _model({"event": "purchase", "within": "7d"})})
    eng.on_trigger(trigger("a", T0))
    eng.on_trigger(trigger("b", T0))
    out = eng.on_event(_event("a", T0 + DAY, "purchase", price=3))
    assert out == [ExitAction("a", "j", 1, "goal", "pause", T0 + DAY)]
    assert eng.position("a", "j") is None
    # b buys after the goal's 7 days: no goal, the journey goes on and sends again
    assert eng.on_event(_event("b", T0 + 8 * DAY, "purchase")) == []
    later = eng.advance(T0 + 10 * DAY + 1)
    assert [s.user_id for s in later if isinstance(s, SendAction)] == ["b"]


def test_a_goal_predicate_and_validation() -> None:
    eng = engine({"j": _model({"event": {"type": "cart", "product_id": {"in": ["p9"]}},
                               "within": "1d"})})
    eng.on_trigger(trigger("a", T0))
    assert eng.on_event(_event("a", T0 + HOUR, "cart", product_id="p1")) == []
    assert eng.on_event(_event("a", T0 + 2 * HOUR, "cart", product_id="p9")) == [
        ExitAction("a", "j", 1, "goal", "pause", T0 + 2 * HOUR)]
    with pytest.raises(ValidationError, match="within"):
        _model({"event": "purchase", "within": 0})
    # a strategy without a goal keeps its digest (the dump leaves the key out)
    plain = _model(None)
    assert digest_of(plain) == hashlib.sha256(
        plain.model_dump_json(by_alias=True, exclude={"goal"}).encode()).hexdigest()[:16]
    assert digest_of(plain) != digest_of(_model({"event": "purchase", "within": "7d"}))


def _control(user: str) -> bool:
    digest = hashlib.blake2b(f"scenetrigger\x1fbring_back\x1f{user}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < 0.2


def test_report_counts_goal_exits_and_converts_on_the_goal(tmp_path: Path) -> None:
    strategies = tmp_path / "goal.yaml"
    strategies.write_text(GOAL_FILE)
    triggers, out = tmp_path / "triggers.jsonl", tmp_path / "report.json"
    assert main(["replay", str(REES46_SAMPLE), "--out", str(triggers), "--no-progress"]) == 0
    assert main(["report", str(triggers), str(REES46_SAMPLE), "--include", str(strategies),
                 "--control-share", "0.2", "--json", str(out)]) == 0
    (row,) = [r for r in orjson.loads(out.read_bytes())["rows"] if r["name"] == "bring_back"]
    # brute force: per user, purchases (events first at equal times) and triggers in time
    # order; a trigger enrols when out of the journey, a purchase after entering exits
    timeline: dict[str, list[tuple[int, int]]] = defaultdict(list)
    with REES46_SAMPLE.open() as fh:
        for r in csv.DictReader(fh):
            if r["event_type"] == "purchase":
                ts = calendar.timegm(time.strptime(r["event_time"], "%Y-%m-%d %H:%M:%S UTC"))
                timeline[r["user_id"]].append((ts * 1000, 0))
    for line in triggers.read_bytes().splitlines():
        t = orjson.loads(line)
        if t["scene"] == "repeat_view_no_purchase":
            timeline[t["user_id"]].append((t["ts"], 1))
    units = [0, 0]
    goals = [0, 0]
    for user, items in timeline.items():
        entered: int | None = None
        arm = int(_control(user))
        for ts, kind in sorted(items):
            if kind == 1 and entered is None:
                entered = ts
                units[arm] += 1
            elif kind == 0 and entered is not None and entered < ts <= entered + 7 * DAY:
                goals[arm] += 1
                entered = None
    assert sum(goals) > 0 and units[1] > 0
    assert (row["treated"], row["control"]) == tuple(units)
    assert (row["converted_treated"], row["converted_control"]) == tuple(goals)
    assert row["goal_exits"] == {"wait_1": sum(goals)}


def _arm(name: str, user: str, share: float) -> int:
    digest = hashlib.blake2b(f"scenetrigger\x1f{name}\x1f{user}".encode(),
                             digest_size=8).digest()
    return int(int.from_bytes(digest, "big") / 2**64 < share)


def test_a_scene_goal_converts_its_units_per_variant_in_the_goals_window(
        tmp_path: Path) -> None:
    import yaml

    from config.loader import DEFAULT_CONFIG_PATH

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["scenes"]["repeat_view_no_purchase"]["goal"] = {"event": "purchase", "within": "2m"}
    config = tmp_path / "goal.yaml"
    config.write_text(yaml.safe_dump(raw))
    plain, with_goal = tmp_path / "plain.jsonl", tmp_path / "goal.jsonl"
    assert main(["replay", str(REES46_SAMPLE), "--out", str(plain), "--no-progress"]) == 0
    assert main(["replay", str(REES46_SAMPLE), "--config", str(config), "--out",
                 str(with_goal), "--no-progress"]) == 0
    assert with_goal.read_bytes() == plain.read_bytes()  # a goal changes no trigger
    # two variants, as `replay --deliver` would name them: by the user's last digit
    lines = [orjson.loads(line) for line in plain.read_bytes().splitlines()]
    for line in lines:
        line["variant"] = "odd" if int(line["user_id"]) % 2 else "even"
    marked = tmp_path / "variants.jsonl"
    marked.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    out = tmp_path / "report.json"
    assert main(["report", str(marked), str(REES46_SAMPLE), "--config", str(config),
                 "--control-share", "0.3", "--json", str(out)]) == 0
    rows = {(r["kind"], r["name"], r["variant"]): r
            for r in orjson.loads(out.read_bytes())["rows"]}
    # brute force: a unit converts on a purchase in (ts, ts + 2m]; not the 24 h window
    purchases: dict[str, list[int]] = defaultdict(list)
    with REES46_SAMPLE.open() as fh:
        for r in csv.DictReader(fh):
            if r["event_type"] == "purchase":
                ts = calendar.timegm(time.strptime(r["event_time"], "%Y-%m-%d %H:%M:%S UTC"))
                purchases[r["user_id"]].append(ts * 1000)
    expected: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0], [0, 0]])
    late = 0  # converted in 24 h but not in the goal's 2 m: shows the window moved
    for line in lines:
        if line["scene"] != "repeat_view_no_purchase":
            continue
        arm = _arm(line["scene"], line["user_id"], 0.3)
        counts = expected[line["variant"]]
        counts[0][arm] += 1
        times = purchases[line["user_id"]]
        if any(line["ts"] < p <= line["ts"] + 120_000 for p in times):
            counts[1][arm] += 1
        elif any(line["ts"] < p <= line["ts"] + DAY for p in times):
            late += 1
    assert set(expected) == {"odd", "even"}
    for variant, (units, converted) in expected.items():
        row = rows[("scene", "repeat_view_no_purchase", variant)]
        assert (row["treated"], row["control"]) == tuple(units)
        assert (row["converted_treated"], row["converted_control"]) == tuple(converted)
    assert sum(sum(c[1]) for c in expected.values()) > 0 and late > 0
