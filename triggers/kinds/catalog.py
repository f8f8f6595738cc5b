"""``back_in_stock``, ``price_drop``, ``new_arrival``: the user's side of
the catalog scenes (docs/semantics-notes.md, "Catalog scenes").

The catalog side (:mod:`triggers.fanout`) decides who hears of a change and
sends each of them a ``catalog_change`` event naming the scene. Here, on the
user's partition, the scene fires on that event: at once with the product as
key, or, with a ``digest`` period, once at the end of the period that the
first such event opened, the key then naming every product of the period
(a JSON array, in change order). The same change taken twice (a redone
fan-out: same product, same time) is taken once: the scene keeps, per
product, the newest change time it took (``fires`` slot, kept for the
period plus the late allowance). A change that reaches an open digest
joins it whatever its time (fan-outs of different products may arrive in
any order), and one that opens a digest counts as of just after the newest
product an earlier digest named, so each change is named by exactly one
digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

from triggers.durations import format_duration_ms
from triggers.events import Event, Trigger
from triggers.kinds.base import Limits, Shape, Slot
from triggers.kinds.explaining import Said, SceneExplanation, hm, plain
from triggers.predicates import Fields, Predicate, parse_predicate
from triggers.state import UserState
from triggers.userfilter import Refused, UserFilter

FANOUT_TYPE = "catalog_change"  # also triggers.fanout.FANOUT_TYPE
# A digest names at most so many products (the newest are left out past it).
MAX_DIGEST_ITEMS = 50


@dataclass(frozen=True, slots=True)
class CatalogScene:
    """One catalog scene. The catalog side reads ``variant_only``,
    ``min_drop_bp``, ``min_drop_cents`` and ``stock_factor``; this side
    ``digest_ms`` and ``user``."""

    name: str
    kind: str
    variant_only: bool = False
    min_drop_bp: int | None = None  # price_drop: at least this many basis points
    min_drop_cents: int | None = None  # price_drop: at least this amount
    stock_factor: float | None = None
    digest_ms: int | None = None
    user: UserFilter | None = None


def item_key(fields: Fields) -> str | None:
    """What a change is about: its product (the trigger's key, which content
    looks the product up by; two variants back in one record are one message)."""
    product = fields.get("product_id")
    return product if type(product) is str and product else None


class CatalogRule:
    """Fire on this scene's ``catalog_change`` events (see the module doc)."""

    __slots__ = ("_digest", "_late", "name", "timer", "user")

    def __init__(self, scene: CatalogScene, limits: Limits) -> None:
        self.name = scene.name
        self._digest = scene.digest_ms
        self.timer = scene.digest_ms is not None
        self.user = scene.user
        self._late = limits.late_ms

    def apply(self, state: UserState, fields: Fields, ts: int, first: bool | None = None,
              _unused: bool | None = None) -> str | int | Refused | Literal[False] | None:
        if fields.get("scene") != self.name:
            return False
        key = item_key(fields)
        if key is None:
            return False
        taken = state.fires.get(self.name)
        last = None if taken is None else taken.get(key)
        if last is not None and ts <= last:
            return False  # this change (or a newer one) was taken already
        if self._digest is None and self.user is not None:
            had = self.user.refuses(state.profile, ts)
            if had is not None:  # nothing recorded: a later change may still fire
                return Refused(key, had)
        if taken is None:
            taken = state.fires[self.name] = {}
        if self._digest is None:
            taken[key] = ts
            return key
        armed = state.timer.get(self.name)
        if armed is None:
            # With no digest open every product taken was named by one that
            # fired: a change older than them (it reached this partition after
            # the clock passed their deadline) opens the next as of just after
            # the newest, so its period names none of them again.
            start = max(ts, max(taken.values(), default=ts - 1) + 1)
            taken[key] = start
            return start + self._digest
        # The open digest takes it; a change older than the digest's start
        # (another product's, fanned out later) is stamped with that start so
        # it is named (a copy sent again is still older: taken once).
        taken[key] = max(ts, armed[0] - self._digest)
        return False

    def due_key(self, state: UserState, deadline: int) -> str | None:
        """The digest's products: those taken in its period, in change order."""
        assert self._digest is not None
        start = deadline - self._digest
        taken = state.fires.get(self.name, {})
        items = sorted((t, k) for k, t in taken.items() if start <= t <= deadline)
        return orjson.dumps([k for _, k in items[:MAX_DIGEST_ITEMS]]).decode()

    def prune(self, state: UserState) -> None:
        taken = state.fires.get(self.name)
        if taken is None or state.max_ts is None:
            return
        horizon = state.max_ts - (self._digest or 0) - self._late
        for key in [k for k, t in taken.items() if t < horizon]:
            del taken[key]
        if not taken:
            del state.fires[self.name]


class CatalogKind:
    timer = False  # per scene: a rule with a digest fires from the clock
    slot: Slot = "fires"
    reads_profile = False

    def __init__(self, name: str) -> None:
        self.name = name

    def rule(self, scene: CatalogScene, limits: Limits) -> CatalogRule:
        return CatalogRule(scene, limits)

    def predicates(self, scene: CatalogScene) -> tuple[Predicate | None, ...]:
        return parse_predicate({"type": FANOUT_TYPE, "scene": scene.name}), None

    def shape(self, scene: CatalogScene) -> Shape:
        return Shape(scene.kind)

    def describe(self, scene: CatalogScene) -> str:
        text = scene.kind
        if scene.min_drop_bp is not None:
            text += f" by {scene.min_drop_bp / 100:g} %"
        if scene.min_drop_cents is not None:
            text += f" by {scene.min_drop_cents} cents"
        if scene.variant_only:
            text += ", the variant wanted only"
        if scene.stock_factor is not None:
            text += f", at most stock x {scene.stock_factor:g} at a time"
        if scene.digest_ms is not None:
            text += f", one digest per {format_duration_ms(scene.digest_ms)}"
        return text

    def explain(self, scene: CatalogScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return plain(scene, fires)  # the fan-out event of each fire is its whole story

    def why(self, scene: CatalogScene, trigger: Trigger, state: UserState | None) -> str:
        what = (f"one digest of {trigger.key}" if scene.digest_ms is not None
                else f"product {trigger.key}")
        return f"{self.describe(scene)}: {what}, fanned out to this user at {hm(trigger.ts)}"


BACK_IN_STOCK_KIND = CatalogKind("back_in_stock")
PRICE_DROP_KIND = CatalogKind("price_drop")
NEW_ARRIVAL_KIND = CatalogKind("new_arrival")
