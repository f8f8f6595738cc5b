"""Replay's audience lines on the shared samples equal a brute-force model
(issue 22, "Done when": enter and exit events equal a brute-force reference).

The model is written apart from triggers/audiences: the scene fires come
from the reference engine of SEMANTICS.md (tests/triggers/reference.py),
and membership is recomputed from scratch at every instant where it could
change: every event of the user, every fire and purchase and the moments
their windows end. An audience's conditions are read as "some fire f with
f <= t < f + within" and "no purchase p with p <= t < p + within" over the
user's whole history (the tracker keeps only the newest of each). Replay's
clock ends at the last event: a window ending at or after it is still open.

The model reads time, not input order, so it is exact on a stream in time
order (the rees46 sample). The OTTO sample comes session by session, each a
month long: its late events are checked for what the tracker promises then
(docs/ads.md): per audience and user, enter and exit alternate, and a
user's changes never go back in time.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import yaml

from scenetrigger.cli.main import main
from scenetrigger.runtime.sources import read_events
from tests.paths import OTTO_SAMPLE, REES46_SAMPLE
from tests.triggers.reference import duration_ms, run_reference
from triggers.events import Event

SCENES = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "scenes.yaml")
                        .read_text())["scenes"]
AUDIENCES: dict[str, Any] = {
    # "viewed (or left a cart), did not buy"
    "viewed_not_bought": {"fired": {"scene": ["repeat_view_no_purchase", "cart_abandonment"],
                                    "within": "30m"},
                          "purchase": {"none_within": "30m"}},
    "recent_buyers": {"purchase": {"within": "20m"}},
}
BUDGET = (20, 3_600_000)  # engine.max_triggers_per_user's default: it also gates fires
Change = tuple[str, str, str, int]  # audience, user, op, ts (ms)


def model_changes(events: list[dict[str, Any]], fires: list[tuple[str, str, Any, int]],
                  clock: int, audiences: dict[str, Any] | None = None) -> list[Change]:
    audiences = AUDIENCES if audiences is None else audiences
    seen: dict[str, set[int]] = defaultdict(set)
    bought: dict[str, list[int]] = defaultdict(list)
    fired: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        seen[event["user_id"]].add(event["ts"])
        if event["type"] == "purchase":
            bought[event["user_id"]].append(event["ts"])
    for scene, user, _key, ts in fires:
        fired[user][scene].append(ts)

    def member(name: str, user: str, t: int) -> bool:
        spec = audiences[name]
        if "fired" in spec:
            within = duration_ms(spec["fired"]["within"])
            if not any(f <= t < f + within for scene in spec["fired"]["scene"]
                       for f in fired[user][scene]):
                return False
        purchase = spec.get("purchase", {})
        recent = [p for p in bought[user] if p <= t]
        if "within" in purchase:
            within = duration_ms(purchase["within"])
            if not any(t < p + within for p in recent):
                return False
        if "none_within" in purchase:
            within = duration_ms(purchase["none_within"])
            if any(t < p + within for p in recent):
                return False
        return True

    windows = [duration_ms(value) for spec in audiences.values()
               for value in (spec.get("fired", {}).get("within"),
                             *spec.get("purchase", {}).values()) if value is not None]
    out: list[Change] = []
    for user in sorted(seen):
        moments = set(seen[user])
        for times in [*fired[user].values(), bought[user]]:
            moments.update(t + w for t in times for w in (0, *windows))
        inside = dict.fromkeys(audiences, False)
        for t in sorted(m for m in moments if m < clock or m in seen[user]):
            for name in audiences:
                now = member(name, user, t)
                if now != inside[name]:
                    out.append((name, user, "enter" if now else "exit", t))
                    inside[name] = now
    return out


def collapse(changes: list[Change]) -> list[Change]:
    """Per audience and user in time order, an enter and an exit at the same
    instant dropped: events of one instant taken one by one may enter and
    leave at that instant, which the model (after all of them) never sees."""
    per: dict[tuple[str, str], list[Change]] = defaultdict(list)
    for change in changes:
        seq = per[change[0], change[1]]
        if seq and seq[-1][3] == change[3] and seq[-1][2] != change[2]:
            seq.pop()
        else:
            seq.append(change)
    return sorted(c for seq in per.values() for c in seq)


def replay_lines(tmp_path: Path, sample: Path) -> list[dict[str, Any]]:
    config = tmp_path / "audiences.yaml"
    config.write_text(yaml.safe_dump({"scenes": SCENES, "audiences": AUDIENCES}))
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(sample), "--config", str(config), "--no-progress",
                 "--out", str(out)]) == 0
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def test_replay_audience_lines_equal_the_brute_force_model(tmp_path: Path) -> None:
    lines = replay_lines(tmp_path, REES46_SAMPLE)
    got = [(x["audience"], x["user_id"], x["op"], round(x["ts"] * 1000)) for x in lines
           if x.get("kind") == "audience"]
    with REES46_SAMPLE.open("rb") as fh:
        events = [dict(item.fields) | {"user_id": item.user_id, "ts": item.ts}
                  for _, item in read_events(fh, "rees46") if isinstance(item, Event)]
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)  # in time order
    fires, _pending = run_reference(SCENES, events, budget=BUDGET)
    clock = max(e["ts"] for e in events)
    expected = model_changes(events, fires, clock)
    # the sample exercises both audiences, entering and leaving
    assert {(c[0], c[2]) for c in expected} == {(a, op) for a in AUDIENCES
                                                for op in ("enter", "exit")}
    assert collapse(got) == collapse(expected)
    reasons = {(x["op"], x["reason"]) for x in lines if x.get("kind") == "audience"}
    assert reasons == {("enter", "condition"), ("exit", "expired"), ("exit", "purchase")}
    # the trigger lines are the default config's (audiences add lines, change none)
    assert len(got) + len(fires) == len(lines)


def test_late_events_keep_each_users_changes_in_order(tmp_path: Path) -> None:
    lines = [x for x in replay_lines(tmp_path, OTTO_SAMPLE) if x.get("kind") == "audience"]
    assert len(lines) > 50
    last: dict[str, float] = {}
    inside: dict[tuple[str, str], bool] = {}
    for x in lines:
        assert x["ts"] >= last.get(x["user_id"], x["ts"])
        last[x["user_id"]] = x["ts"]
        key = (x["audience"], x["user_id"])
        assert inside.get(key, False) == (x["op"] == "exit")
        inside[key] = x["op"] == "enter"
