"""The report counts delivery outcomes of ``replay --deliver`` and feedback
events (once per message) on a small hand-made stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from config.strategy_models import ControlModel
from strategies.reporting import ReportOptions, build_report
from tests.strategies.helpers import DAY, HOUR, T0, shipped
from triggers.events import Event


def ev(user: str, ts: int, kind: str, **fields: Any) -> Event:
    return Event(user, ts, kind, {"type": kind, "user_id": user, "ts": ts, **fields})


def test_delivery_outcomes_feedback_and_conversions(tmp_path: Path) -> None:
    triggers = [
        {"scene": "cart_abandonment", "user_id": "a", "key": None, "ts": T0,
         "delivery": "delivered", "channel": "inbox", "variant": "v_a"},
        {"scene": "cart_abandonment", "user_id": "b", "key": None, "ts": T0 + 1,
         "delivery": "suppressed", "reason": "cap_per_day", "channel": None, "variant": "v_a"},
        {"scene": "cart_abandonment", "user_id": "c", "key": None, "ts": T0 + 2,
         "delivery": "deferred", "reason": "quiet_hours", "channel": None, "variant": "v_b"},
    ]
    events = [
        ev("a", T0 + HOUR, "opened", scene="cart_abandonment"),
        ev("a", T0 + HOUR + 1, "opened", scene="cart_abandonment"),  # the same message again
        ev("a", T0 + 2 * HOUR, "clicked", scene="cart_abandonment"),
        ev("a", T0 + 3 * HOUR, "purchase", price="19.90"),
        ev("c", T0 + 2 * DAY, "purchase", price=5),  # outside the 24h window
    ]
    rows = build_report(triggers, events,
                        ReportOptions(DAY, ControlModel(share=0.0), shipped()))
    by = {(r.kind, r.name, r.variant): r.to_dict() for r in rows}
    va = by[("scene", "cart_abandonment", "v_a")]
    assert (va["triggered"], va["sent"], va["delivered"], va["opened"], va["clicked"]) == (
        2, 1, 1, 1, 1)
    assert va["suppressed"] == {"cap_per_day": 1}
    assert (va["converted"], va["revenue"]) == (1, 19.9)
    vb = by[("scene", "cart_abandonment", "v_b")]
    assert vb["suppressed"] == {"deferred:quiet_hours": 1} and vb["converted"] == 0
    strat = by[("strategy", "reactivation", "v1")]
    assert (strat["triggered"], strat["treated"], strat["sent"], strat["converted"]) == (
        3, 3, 3, 1)
    assert orjson.dumps([r.to_dict() for r in rows])  # JSON-ready
