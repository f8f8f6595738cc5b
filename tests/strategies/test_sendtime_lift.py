"""``report --send-time``: open and conversion lift of held sends over the
holdout, with the interval computed here from the documented formula."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from strategies.sendtime_lift import send_time_lift
from triggers.events import Event

HOUR = 3_600_000
T0 = 1_700_000_000_000
Z = 1.959963984540054


def world() -> tuple[list[dict[str, object]], list[Event]]:
    """40 users per arm, one unit each; best: 30 open, 12 buy; holdout: 10 open, 6 buy.
    Plus opens and purchases that must not count."""
    records: list[dict[str, object]] = []
    events: list[Event] = []
    for arm, opens, buys in (("best", 30, 12), ("holdout", 10, 6)):
        for i in range(40):
            user = f"{arm}{i}"
            ts = T0 + i * 1000
            records.append({"scene": "cart", "user_id": user, "key": None, "ts": ts,
                            "delivery": "delivered", "send_time": arm})
            if i < opens:
                events.append(Event(user, ts + 5 * HOUR, "opened", {"scene": "cart"}))
            if i < buys:
                events.append(Event(user, ts + 6 * HOUR, "purchase", {"price": 10}))
            # Not counted: before the trigger, after the window, another scene's open.
            events.append(Event(user, ts - 1, "opened", {"scene": "cart"}))
            events.append(Event(user, ts + 25 * HOUR, "purchase", {}))
            events.append(Event(user, ts + HOUR, "clicked", {"scene": "other"}))
    # A line without an arm (a scene with no send time) is no unit.
    records.append({"scene": "cart", "user_id": "plain", "key": None, "ts": T0})
    events.sort(key=lambda e: e.ts)
    return records, events


def expected_interval(x_t: int, x_c: int, k: int = 40) -> tuple[float, float, float]:
    """One unit per user: the CR1 variance is p(1-p)/k * k/(k-1) per arm."""
    p_t, p_c = x_t / k, x_c / k
    var_t = k / (k - 1) * sum((x - p_t) ** 2 for x in [1] * x_t + [0] * (k - x_t)) / k**2
    var_c = k / (k - 1) * sum((x - p_c) ** 2 for x in [1] * x_c + [0] * (k - x_c)) / k**2
    half = Z * math.sqrt(var_t + var_c)
    return p_t - p_c, p_t - p_c - half, p_t - p_c + half


def test_rates_lift_and_interval() -> None:
    records, events = world()
    [row] = send_time_lift(records, events, 24 * HOUR)
    assert row.name == "cart"
    assert row.units == {"best": 40, "holdout": 40}
    assert row.open_rate == {"best": 0.75, "holdout": 0.25}
    assert row.conversion_rate == {"best": 0.3, "holdout": 0.15}
    lift, low, high = expected_interval(30, 10)
    assert row.open_lift is not None and math.isclose(row.open_lift, lift)
    assert row.open_interval is not None
    assert math.isclose(row.open_interval[0], low) and math.isclose(row.open_interval[1], high)
    lift, low, high = expected_interval(12, 6)
    assert row.conversion_interval is not None and row.conversion_lift is not None
    assert math.isclose(row.conversion_lift, lift)
    assert math.isclose(row.conversion_interval[0], low)


def test_the_report_command_prints_it(tmp_path: Path) -> None:
    records, events = world()
    triggers = tmp_path / "out.jsonl"
    triggers.write_text("".join(json.dumps(r) + "\n" for r in records))
    feed = tmp_path / "events.jsonl"
    feed.write_text("".join(json.dumps({"user_id": e.user_id, "ts": e.ts, "type": e.type,
                                        **e.fields}) + "\n" for e in events))
    run = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "report", str(triggers),
                          str(feed), "--send-time", "--json", "-"],
                         capture_output=True, text=True, check=True)
    [row] = json.loads(run.stdout)["rows"]
    assert row["open_rate"] == {"best": 0.75, "holdout": 0.25}
    table = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "report", str(triggers),
                            str(feed), "--send-time"], capture_output=True, text=True,
                           check=True).stdout
    assert "open +50.0 pp" in table and "cart" in table
