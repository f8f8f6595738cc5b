"""``report --kpis`` (issue 24.5) on the shared samples and a small stream
with identify events: every figure brute force from the raw file here (csv /
json and hashlib), never through the project's readers or KPI code."""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import hashlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from scenetrigger.cli.main import main
from tests.paths import OTTO_SAMPLE, REES46_SAMPLE

DAY = 86_400_000


def _week(ts: int) -> int:
    day = dt.datetime.fromtimestamp(ts / 1000, dt.UTC).date()
    monday = day - dt.timedelta(days=day.weekday())
    return calendar.timegm(monday.timetuple()) * 1000


def _held(user: str, share: float) -> bool:
    digest = hashlib.blake2b(f"scenetrigger\x1f*\x1f{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def _expected(people: dict[str, dict[str, Any]], visitors: dict[str, bool]) -> dict[str, Any]:
    buyers = {p: v for p, v in people.items() if v["orders"]}
    firsts = {p: _week(min(v["orders"])) for p, v in buyers.items()}
    last = max((_week(max(v["orders"])) for v in buyers.values()), default=0)
    cohorts = []
    for start in sorted(set(firsts.values())):
        members = [p for p, w in firsts.items() if w == start]
        counts = [sum(1 for p in members if any(_week(t) == start + k * 7 * DAY
                                                for t in buyers[p]["orders"]))
                  for k in range((last - start) // (7 * DAY) + 1)]
        cohorts.append({"week": start, "size": len(members), "counts": counts,
                        "retained": [c / len(members) for c in counts]})
    n, b = len(people), len(buyers)
    carted = sum(1 for v in people.values() if v["cart"])
    repeat = sum(1 for v in buyers.values() if len(v["orders"]) >= 2)
    registered = sum(visitors.values())
    return {"visitors": len(visitors), "registered": registered,
            "registration_rate": registered / len(visitors) if visitors else None,
            "people": n, "carted": carted, "add_to_cart_rate": carted / n if n else None,
            "buyers": b, "first_purchase_rate": b / n if n else None,
            "repeat_buyers": repeat, "repurchase_rate": repeat / b if b else None,
            "cohorts": cohorts}


def _person() -> dict[str, Any]:
    return {"cart": False, "orders": set()}


def _kpis(tmp: Path, triggers: Path, events: Path, *extra: str) -> dict[str, Any]:
    out = tmp / "kpis.json"
    assert main(["report", str(triggers), str(events), "--kpis", *extra,
                 "--json", str(out)]) == 0
    result: dict[str, Any] = orjson.loads(out.read_bytes())["kpis"]
    return result


def _rees46_people() -> dict[str, dict[str, Any]]:
    people: dict[str, dict[str, Any]] = defaultdict(_person)
    with REES46_SAMPLE.open() as fh:
        for row in csv.DictReader(fh):
            person = people[row["user_id"]]
            if row["event_type"] == "cart":
                person["cart"] = True
            elif row["event_type"] == "purchase":
                ts = calendar.timegm(time.strptime(row["event_time"], "%Y-%m-%d %H:%M:%S UTC"))
                person["orders"].add(ts * 1000)
    return people


def test_rees46_kpis_and_the_global_split(tmp_path: Path) -> None:
    triggers = tmp_path / "triggers.jsonl"
    assert main(["replay", str(REES46_SAMPLE), "--out", str(triggers), "--no-progress"]) == 0
    got = _kpis(tmp_path, triggers, REES46_SAMPLE, "--global-share", "0.3")
    people = _rees46_people()
    visitors = dict.fromkeys(people, False)
    expected = _expected(people, visitors)
    assert expected["buyers"] > 50 and expected["repeat_buyers"] > 0  # a real test (ratios: the same x / n division, exact)
    assert got["all"] == expected
    for arm, held in (("held_out", True), ("marketed", False)):
        mine = {p: v for p, v in people.items() if _held(p, 0.3) == held}
        assert got["by"]["global"][arm] == _expected(mine, dict.fromkeys(mine, False))
    # a replay without --deliver says no segment or style
    assert list(got["by"]["segment"]) == ["-"] and list(got["by"]["style"]) == ["-"]


def test_rees46_segment_split_from_delivered_lines(tmp_path: Path) -> None:
    triggers = tmp_path / "triggers.jsonl"
    assert main(["replay", str(REES46_SAMPLE), "--deliver", "dry-run", "--out", str(triggers),
                 "--no-progress"]) == 0
    segment: dict[str, str] = {}
    for line in triggers.read_bytes().splitlines():
        record = orjson.loads(line)
        if record.get("segment"):
            segment[record["user_id"]] = record["segment"]
    got = _kpis(tmp_path, triggers, REES46_SAMPLE)
    people = _rees46_people()
    values = {segment.get(p, "-") for p in people}
    assert len(values) >= 2 and set(got["by"]["segment"]) == values
    for value in values:
        mine = {p: v for p, v in people.items() if segment.get(p, "-") == value}
        assert got["by"]["segment"][value] == _expected(mine, dict.fromkeys(mine, False))
    assert set(got["by"]["global"]) == {"marketed"}  # no global share configured


def test_otto_kpis(tmp_path: Path) -> None:
    triggers = tmp_path / "triggers.jsonl"
    assert main(["replay", str(OTTO_SAMPLE), "--out", str(triggers), "--no-progress"]) == 0
    people: dict[str, dict[str, Any]] = defaultdict(_person)
    for line in OTTO_SAMPLE.read_bytes().splitlines():
        session = orjson.loads(line)
        person = people[str(session["session"])]
        for item in session["events"]:
            if item["type"] == "carts":
                person["cart"] = True
            elif item["type"] == "orders":
                person["orders"].add(item["ts"])
    expected = _expected(people, dict.fromkeys(people, False))
    assert expected["carted"] > 0
    assert _kpis(tmp_path, triggers, OTTO_SAMPLE)["all"] == expected


def test_identify_folds_a_visitor_into_the_known_user_and_cohorts_span_weeks(
        tmp_path: Path) -> None:
    t0 = 1_569_888_000_000  # Tuesday 2019-10-01: its week starts Monday 2019-09-30
    monday = t0 - DAY
    events = [
        {"user_id": "anon-1", "ts": t0, "type": "cart", "product_id": "p"},
        {"user_id": "anon-1", "ts": t0 + 1, "type": "identify", "known_id": "k1"},
        {"user_id": "k1", "ts": t0 + 2, "type": "purchase", "product_id": "p", "price": 5},
        {"user_id": "k1", "ts": t0 + 2, "type": "purchase", "product_id": "q", "price": 5},
        {"user_id": "anon-2", "ts": t0 + 3, "type": "view", "product_id": "p"},
        {"user_id": "k2", "ts": t0 + 4, "type": "purchase", "product_id": "p", "price": 5},
        {"user_id": "k1", "ts": t0 + 8 * DAY, "type": "purchase", "product_id": "p", "price": 5},
        {"user_id": "k3", "ts": t0 + 7 * DAY, "type": "purchase", "product_id": "p", "price": 5},
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    triggers = tmp_path / "none.jsonl"
    triggers.write_bytes(b"")
    got = _kpis(tmp_path, triggers, path)["all"]
    # people: k1 (with anon-1's cart), anon-2, k2, k3; visitors: every id but k1 (an
    # identify's known id; the stream cannot tell k2, k3 from anonymous ids), of whom
    # anon-1 registered; k1 has two orders (one timestamp of two lines, a week later)
    assert (got["visitors"], got["registered"], got["people"]) == (4, 1, 4)
    assert (got["carted"], got["buyers"], got["repeat_buyers"]) == (1, 3, 1)
    week = 7 * DAY
    assert got["cohorts"] == [
        {"week": monday, "size": 2, "counts": [2, 1], "retained": [1.0, 0.5]},
        {"week": monday + week, "size": 1, "counts": [1], "retained": [1.0]},
    ]
