"""The journey step funnel (issue 24.4): ``report --journey NAME`` on the
rees46 sample against a walk of the strategy written here from the CSV and
the trigger lines, and the per-message columns (opens, clicks, delivery
refusals) on a small stream with hand-counted figures."""

from __future__ import annotations

import calendar
import csv
import hashlib
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from channels.feedback.decisions import DecisionRecord
from config.strategy_models import ControlModel, StrategyModel
from scenetrigger.cli.main import main
from strategies.reporting import ReportOptions, build_report
from strategies.step_funnel import StepFunnels
from tests.paths import REES46_SAMPLE
from tests.strategies.helpers import HOUR, T0
from triggers.events import Event

MINUTE = 60_000
STRATEGY = {"entry": {"scene": "repeat_view_no_purchase"},
            "goal": {"event": "purchase", "within": "1h"},
            "steps": [{"id": "s1", "send": {"channel": "push", "content": "reactivation_push_1"}},
                      {"id": "w1", "wait": "10m"},
                      {"id": "s2", "send": {"channel": "push", "content": "reactivation_push_2"}},
                      {"id": "w2", "wait": "1h"}]}


def _control(user: str) -> bool:
    digest = hashlib.blake2b(f"scenetrigger\x1fsteps\x1f{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < 0.2


def _expected(triggers: list[dict[str, Any]]) -> dict[str, Any]:
    """Walk each user's purchases and triggers (events first at equal times);
    a wait's deadline passes when the clock (the largest ts taken) is past it."""
    items: dict[str, list[tuple[int, int]]] = defaultdict(list)
    end = 0
    with REES46_SAMPLE.open() as fh:
        for r in csv.DictReader(fh):
            ts = calendar.timegm(time.strptime(r["event_time"], "%Y-%m-%d %H:%M:%S UTC")) * 1000
            end = max(end, ts)
            if r["event_type"] == "purchase":
                items[r["user_id"]].append((ts, 0))
    for t in triggers:
        if t["scene"] == "repeat_view_no_purchase":
            items[t["user_id"]].append((t["ts"], 1))
    rows: dict[str, Counter[str]] = {s: Counter() for s in ("s1", "w1", "s2", "w2")}
    enrolled: Counter[str] = Counter()
    busy = 0

    def enter(step: str, control: bool) -> None:
        rows[step]["entered"] += 1
        rows[step]["entered_control"] += control
        if step.startswith("s"):
            rows[step]["suppressed:control" if control else "sent"] += 1

    def advance(run: dict[str, Any] | None, bound: int, control: bool) -> dict[str, Any] | None:
        while run is not None and run["due"] < bound:
            if run["at"] == "w1":
                enter("s2", control)
                enter("w2", control)
                run.update(at="w2", due=run["due"] + HOUR)
            else:
                rows["w2"]["exited:end"] += 1
                run = None
        return run

    for user, seq in items.items():
        control = _control(user)
        run: dict[str, Any] | None = None
        for ts, kind in sorted(seq):
            run = advance(run, ts, control)
            if kind == 0:
                if run is not None and run["t0"] < ts <= run["t0"] + HOUR:
                    rows[run["at"]]["exited:goal"] += 1
                    rows[run["at"]]["converted"] += 1
                    rows[run["at"]]["converted_control"] += control
                    run = None
            elif run is not None:
                busy += 1
            else:
                enrolled["all"] += 1
                enrolled["control"] += control
                enter("s1", control)
                enter("w1", control)
                run = {"t0": ts, "at": "w1", "due": ts + 10 * MINUTE}
        advance(run, end, control)
    return {"rows": rows, "enrolled": enrolled, "busy": busy}


def test_report_journey_matches_a_walk_of_the_sample(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    strategies = tmp_path / "steps.yaml"
    strategies.write_text(yaml.safe_dump({"steps": STRATEGY}))
    triggers, out = tmp_path / "triggers.jsonl", tmp_path / "journey.json"
    assert main(["replay", str(REES46_SAMPLE), "--out", str(triggers), "--no-progress"]) == 0
    assert main(["report", str(triggers), str(REES46_SAMPLE), "--include", str(strategies),
                 "--control-share", "0.2", "--journey", "steps", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    got = orjson.loads(out.read_bytes())["journey"]
    want = _expected([orjson.loads(line) for line in triggers.read_bytes().splitlines()])
    assert (got["enrolled"], got["enrolled_control"]) == (want["enrolled"]["all"],
                                                          want["enrolled"]["control"])
    assert got["entry_suppressed"] == ({"in_progress": want["busy"]} if want["busy"] else {})
    assert [r["step"] for r in got["steps"]] == ["s1", "w1", "s2", "w2"]
    for row in got["steps"]:
        exp = want["rows"][row["step"]]
        assert (row["entered"], row["entered_control"], row["sent"]) == (
            exp["entered"], exp["entered_control"], exp["sent"]), row
        assert row["suppressed"] == {k.split(":", 1)[1]: n for k, n in exp.items()
                                     if k.startswith("suppressed:") and n}
        assert row["exited"] == {k.split(":", 1)[1]: n for k, n in exp.items()
                                 if k.startswith("exited:") and n}
        assert (row["converted"], row["converted_control"]) == (exp["converted"],
                                                                exp["converted_control"])
    # the figures can fail: goal exits, ends and both arms all occur on the sample
    assert want["rows"]["w1"]["exited:goal"] > 0 and want["rows"]["w2"]["exited:end"] > 0
    assert want["enrolled"]["control"] > 0
    assert table.startswith(f"journey steps: enrolled {want['enrolled']['all']} ")
    # the JSON on stdout is the same funnel
    assert main(["report", str(triggers), str(REES46_SAMPLE), "--include", str(strategies),
                 "--control-share", "0.2", "--journey", "steps", "--json", "-"]) == 0
    assert orjson.loads(capsys.readouterr().out)["journey"] == got


def test_an_unknown_journey_is_a_clear_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    triggers = tmp_path / "t.jsonl"
    triggers.write_text("")
    assert main(["report", str(triggers), str(REES46_SAMPLE), "--journey", "nope"]) != 0
    assert "no strategy named 'nope'" in capsys.readouterr().err


def _event(user: str, ts: int, kind: str, **fields: Any) -> Event:
    return Event(user, ts, kind, {"user_id": user, "ts": ts, "type": kind, **fields})


def test_opens_clicks_and_delivery_refusals_count_at_the_sending_step() -> None:
    model = StrategyModel.model_validate({
        "entry": {"scene": "repeat_view_no_purchase"},
        "steps": [{"id": "hello", "send": {"channel": "push", "content": "c"}},
                  {"id": "look", "branch": {"within": "1h", "when": [
                      {"event": "clicked", "goto": "bye"}], "otherwise": "exit"}},
                  {"id": "bye", "send": {"channel": "email", "content": "c"}}]})
    lines = [{"scene": "repeat_view_no_purchase", "user_id": u, "key": "p", "ts": T0}
             for u in ("a", "b", "c")]
    mid = {u: f"j|j|v1|{u}|{T0}|hello|push" for u in "abc"}
    events = [
        _event("a", T0 + 1, "opened", message_id=mid["a"], channel="push"),
        _event("a", T0 + 2, "opened", message_id=mid["a"], channel="push"),  # once
        _event("a", T0 + 3, "clicked", message_id=mid["a"], channel="push"),
        _event("b", T0 + 4, "opened", message_id=mid["b"], channel="push"),
        _event("c", T0 + 5, "opened", message_id="j|other|v1|c|0|x|push"),  # not ours
        _event("a", T0 + 10, "purchase", price=5),  # converts a's unit (24 h window)
        _event("z", T0 + 2 * HOUR, "page"),  # the clock passes b's and c's windows
    ]
    steps = StepFunnels()
    build_report(lines, events, ReportOptions(86_400_000, ControlModel(), {"j": model}), steps)
    refused = DecisionRecord(T0, "b", mid["b"], "journey:j", "suppressed", "cap_day",
                             message_id=mid["b"])
    delivered = DecisionRecord(T0, "c", mid["c"], "journey:j", "delivered",
                               message_id=mid["c"])
    steps.decisions([refused, delivered])
    rows = {r["step"]: r for r in steps.result("j")["steps"]}
    assert rows["hello"] == {
        "version": 1, "step": "hello", "kind": "send", "entered": 3, "entered_control": 0,
        "sent": 3, "suppressed": {"cap_day": 1}, "opened": 2, "clicked": 1, "converted": 0,
        "converted_control": 0, "exited": {}}
    assert (rows["look"]["entered"], rows["look"]["exited"]) == (3, {"end": 2})  # otherwise: exit leaves as the end does
    # a clicked, went on to the email, left at the end, then bought there
    assert (rows["bye"]["entered"], rows["bye"]["sent"], rows["bye"]["exited"],
            rows["bye"]["converted"]) == (1, 1, {"end": 1}, 1)
