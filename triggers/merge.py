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

Who may merge (docs/security.md, "Identity"; :func:`identify_refusal` is the
rule every runtime applies): an ``identify`` names an anonymous id and a
known user; ``known_id`` is resolved through the existing aliases (so, on
one host, an alias always points at an id that is not itself an alias: no
chains; a worker's partitions can hold one until the id's next record
re-points it, :mod:`agents.engine_host`), a
known user (an id others were merged into) is never re-pointed by an
``identify`` (only an admin merge, :data:`ADMIN_MERGE`, moves one), and a
merge that would close a cycle is refused.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from triggers.audiences.data import AudienceData
from triggers.budget import merge_given
from triggers.profile import Profile
from triggers.sendtime import merge_curves
from triggers.state import KeyWindow, UserState

# Written only by `scenetrigger users merge` (an operator): known user A is
# known user B from now on. Clients cannot send it (a reserved type).
ADMIN_MERGE = "merge_users"
# Why an identity statement was refused (dead-letter reasons, metric labels).
REASON_NO_KNOWN_ID = "identify_no_known_id"
REASON_KNOWN_USER = "identify_known_user"
REASON_CYCLE = "identity_cycle"
REASON_CHAIN = "identity_chain"


def identify_refusal(anonymous: str, known: str, aliases: Mapping[str, str],
                     merged: Mapping[str, Container[str]],
                     admin: bool = False) -> tuple[str, str] | None:
    """Why ``anonymous`` may not become ``known`` (None: it may): ``(reason,
    detail)``. ``aliases`` maps identified ids to their known user, ``merged``
    each known user (an id others were merged into) to those ids. The known-user check
    comes first: the worker can always make it on the anonymous id's own
    partition, while ``known``'s alias may live on another one."""
    if not admin and anonymous in merged:
        return REASON_KNOWN_USER, (f"{anonymous!r} is a known user (others were merged into "
                                   "it): only `scenetrigger users merge` moves a known user")
    target = aliases.get(known, known)
    # ``known`` was merged into ``anonymous``: it stands for it (the worker
    # sees this on the anonymous id's partition even when the alias is elsewhere).
    if target == anonymous or known in merged.get(anonymous, ()):
        return REASON_CYCLE, f"{known!r} already stands for {anonymous!r}: the merge would loop"
    return None

_MAX_AMOUNT_CENTS = (1 << 53) - 1


def merge_states(known: UserState | None, anonymous: UserState,
                 max_entries: int = 64) -> UserState:
    """A new state: ``known`` with ``anonymous`` folded in (neither is changed)."""
    base = known if known is not None else UserState()
    out = UserState()
    out.max_ts = _newest(base.max_ts, anonymous.max_ts)
    out.timer = dict(base.timer)
    for scene, timer in anonymous.timer.items():
        held = out.timer.get(scene)
        if held is None or timer[0] > held[0]:
            out.timer[scene] = timer
    for scene in base.windows.keys() | anonymous.windows.keys():
        mine, theirs = base.windows.get(scene, {}), anonymous.windows.get(scene, {})
        out.windows[scene] = {key: _window(mine.get(key), theirs.get(key), max_entries)
                             for key in mine.keys() | theirs.keys()}
    for scene in base.fires.keys() | anonymous.fires.keys():
        mine_fires, their_fires = base.fires.get(scene, {}), anonymous.fires.get(scene, {})
        out.fires[scene] = {
            key: max(v for v in (mine_fires.get(key), their_fires.get(key)) if v is not None)
            for key in mine_fires.keys() | their_fires.keys()}
    out.profile = merge_profiles(base.profile, anonymous.profile)
    out.budget = merge_given(base.budget, anonymous.budget, max_entries)  # triggers.budget
    out.audience = _audience(base.audience, anonymous.audience)
    return out


def _audience(mine: AudienceData | None, theirs: AudienceData | None) -> AudienceData | None:
    """K's audience data with A's scene fires folded in (the newer per scene,
    as for cooldowns); memberships, score and times stay K's: the host ends
    A's memberships and evaluates K again."""
    if theirs is None or not theirs.fired:
        return mine
    out = AudienceData()
    if mine is not None:
        out.members, out.score, out.due, out.at = dict(mine.members), mine.score, mine.due, mine.at
        out.fired = dict(mine.fired)
    for scene, ts in theirs.fired.items():
        if ts > out.fired.get(scene, ts - 1):
            out.fired[scene] = ts
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
    out.engagement = merge_curves(known.engagement, anonymous.engagement)
    out.dates = {**anonymous.dates, **known.dates}  # the known user's directory wins
    return out
