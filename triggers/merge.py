"""Identity: an anonymous id's state merged into a known user's (pure).

Used when an ``identify`` event says anonymous id A is known user K: the
host that holds K folds A's state into K's with :func:`merge_states`
(:meth:`triggers.host.EngineHost.absorb`; the worker first sends A's state
from A's partition to K's). docs/audiences.md, "Identity", and
docs/semantics-notes.md state the rule.

* profile aggregates add up (counts, amount, hour and weekday histograms);
  first seen is the earlier, last seen / last purchase the later; the last
  product, query and category are those of whichever id was active last;
  time zone and locale are K's unless K has none;
* repeat windows are the union of both ids' timestamps per scene and key
  (newest ``max_entries`` kept), the newer fire time; arrival fire times
  the newer per key, so cooldowns hold across the merge;
* absence timers are carried over: per scene the timer with the later
  deadline is kept (K's on a tie), as if A's arming had been K's latest
  one; the host re-arms the kept timer on K's engine
  (:meth:`triggers.host.EngineHost.absorb`). A cancel K saw before the merge
  does not cancel a timer A armed, nor the reverse: each cancelled only its
  own id's timer.
"""

from __future__ import annotations

from triggers.profile import Profile
from triggers.state import KeyWindow, UserState

_MAX_AMOUNT_CENTS = (1 << 53) - 1


def merge_states(known: UserState | None, anonymous: UserState,
                 max_entries: int = 64) -> UserState:
    """A new state: ``known`` with ``anonymous`` folded in (neither is changed)."""
    base = known if known is not None else UserState()
    out = UserState()
    out.max_ts = _newest(base.max_ts, anonymous.max_ts)
    out.absence = dict(base.absence)
    for scene, timer in anonymous.absence.items():
        held = out.absence.get(scene)
        if held is None or timer[0] > held[0]:
            out.absence[scene] = timer
    for scene in base.repeat.keys() | anonymous.repeat.keys():
        mine, theirs = base.repeat.get(scene, {}), anonymous.repeat.get(scene, {})
        out.repeat[scene] = {key: _window(mine.get(key), theirs.get(key), max_entries)
                             for key in mine.keys() | theirs.keys()}
    for scene in base.arrival.keys() | anonymous.arrival.keys():
        mine_fires, their_fires = base.arrival.get(scene, {}), anonymous.arrival.get(scene, {})
        out.arrival[scene] = {
            key: max(v for v in (mine_fires.get(key), their_fires.get(key)) if v is not None)
            for key in mine_fires.keys() | their_fires.keys()}
    out.profile = merge_profiles(base.profile, anonymous.profile)
    return out


def _window(mine: KeyWindow | None, theirs: KeyWindow | None, max_entries: int) -> KeyWindow:
    win = KeyWindow()
    parts = [w for w in (mine, theirs) if w is not None]
    win.when = sorted(t for w in parts for t in w.when)[-max_entries:]
    win.unless = sorted(t for w in parts for t in w.unless)[-max_entries:]
    fires = [w.last_fire for w in parts if w.last_fire is not None]
    win.last_fire = max(fires) if fires else None
    return win


def _newest(a: int | None, b: int | None) -> int | None:
    found = [v for v in (a, b) if v is not None]
    return max(found) if found else None


def _oldest(a: int | None, b: int | None) -> int | None:
    found = [v for v in (a, b) if v is not None]
    return min(found) if found else None


def merge_profiles(known: Profile, anonymous: Profile) -> Profile:
    out = Profile()
    for name in ("views", "searches", "category_views", "promo_views", "purchases",
                 "weekday", "weekend"):
        setattr(out, name, getattr(known, name) + getattr(anonymous, name))
    out.amount_cents = min(known.amount_cents + anonymous.amount_cents, _MAX_AMOUNT_CENTS)
    out.hours = [a + b for a, b in zip(known.hours, anonymous.hours, strict=True)]
    out.first_ts = _oldest(known.first_ts, anonymous.first_ts)
    out.last_ts = _newest(known.last_ts, anonymous.last_ts)
    out.last_purchase_ts = _newest(known.last_purchase_ts, anonymous.last_purchase_ts)
    later, earlier = ((anonymous, known) if (anonymous.last_ts or 0) > (known.last_ts or 0)
                      else (known, anonymous))
    for name in ("last_product", "last_query", "last_category"):
        setattr(out, name, getattr(later, name) or getattr(earlier, name))
    out.tz = known.tz or anonymous.tz
    out.locale = known.locale or anonymous.locale
    # Intervals of two histories do not add up: the longer purchase history's cycle.
    cycles = known if known.purchases >= anonymous.purchases else anonymous
    out.cycle, out.cats = cycles.cycle, dict(cycles.cats)
    out.first_purchase_ts = _oldest(known.first_purchase_ts, anonymous.first_purchase_ts)
    return out
