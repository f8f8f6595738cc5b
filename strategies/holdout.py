"""The report's "all marketing vs none" row: the global control group
(``strategies.control.global_share``) against everyone else.

The unit is a user, entering at their first scene trigger in the report's
input (the first moment the automation could have reached them, held out or
not). A user converts with a purchase after that moment, up to the end of the
input (not the attribution window: the question is what all the marketing
together earns, however late), and every such purchase's price is their
revenue. One unit per user, so the per-unit and per-user uplifts agree and
the users are independent draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from channels.policy.control import in_global_control
from config.strategy_models import ControlModel
from strategies.attribution import Funnel

KIND = "global"
NAME = "all_marketing"


def global_mark(record: Mapping[str, Any]) -> bool | None:
    """True when a ``replay --deliver`` line says the user is globally held
    out, False when it carries another decision, None when it carries none."""
    group = record.get("group")
    if group == "global":
        return True
    if group in ("control", "treated") or isinstance(record.get("delivery"), str):
        return False
    return None


class GlobalHoldout:
    """Feed trigger lines and purchases in time order; read the row."""

    def __init__(self, control: ControlModel) -> None:
        self.control = control
        self.row = Funnel(KIND, NAME, "-")
        self._entered: dict[str, int] = {}  # user -> arm (0 marketed, 1 held out)

    def held(self, record: Mapping[str, Any]) -> bool:
        """The line's user is in the global control group (its mark, else the hash)."""
        mark = global_mark(record)
        return in_global_control(self.control, str(record["user_id"])) if mark is None else mark

    def triggered(self, user_id: str, held: bool) -> None:
        self.row.triggered += 1
        if held:
            self.row.suppressed["global_control"] += 1
        if user_id in self._entered:
            return
        group = 1 if held else 0
        self._entered[user_id] = group
        self.row.units[group] += 1
        self.row.users[group][user_id] = [1, 0]

    def purchase(self, user_id: str, price: float) -> None:
        """A purchase after the user's entry (the caller feeds in time order
        with events before triggers at equal times, so "after" is strict)."""
        group = self._entered.get(user_id)
        if group is None:
            return
        tally = self.row.users[group][user_id]
        if not tally[1]:
            tally[1] = 1
            self.row.converted[group] += 1
        self.row.revenue[group] += price

    def wanted(self) -> bool:
        """The row shows when a global share is configured or a line was held out."""
        return self.control.global_share > 0.0 or self.row.units[1] > 0
