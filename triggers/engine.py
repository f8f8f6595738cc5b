"""The scene engine: ``handle(event)`` and ``advance(now_ms)`` in, triggers out.

The clock is the largest time seen (event ``ts`` or an ``advance``); nothing
here reads the wall clock. Absence timers sit in a heap ordered by
(deadline, arm sequence), so due timers fire in deadline order and, on equal
deadlines, in the order they were armed. Heap entries are checked against the
user's state when popped, so re-arming or cancelling never searches the heap.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from triggers.events import REFUSED_BUDGET, Event, Refusal, Trigger
from triggers.kinds import kind_of
from triggers.kinds.base import Limits, Rule, Scene
from triggers.predicates import Matcher, Predicate
from triggers.reshape import apply_resets, reset_store, resets
from triggers.state import MemoryStore, StateStore, UserState
from triggers.userfilter import Refused, UserFilter

_NEG_INF = -(1 << 63)
# Refusals kept until a host takes them (a host that never asks holds no more).
MAX_PENDING_REFUSALS = 4096
_MAX_TYPES_CACHED = 1024  # distinct event types remembered for rule selection
# Per event type: (rule, first predicate's result, second's, gate, timer), None
# = test the event; a gate is a test that must pass first (see Engine._rules_for).
_Step = tuple[Rule, bool | None, bool | None, "Matcher | None", bool]
_Plan = tuple[_Step, ...]
DueKey = Callable[[UserState, int], "str | None"]


@dataclass(frozen=True, slots=True)
class Arm:
    """A config experiment's candidate arm: ``scenes`` run instead of the
    engine's for the users ``takes`` picks (a hash of the user: each user is
    in one arm and sees one version's scenes). State stays per user."""

    scenes: tuple[Scene, ...]
    takes: Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class PendingTimer:
    scene: str
    user_id: str
    deadline: int


class Engine:
    """Runs a list of scenes over events for many users.

    ``track_profile``: keep each user's :class:`~triggers.profile.Profile`
    up to date. A host sets it from what it reads: delivery, content and
    trigger records read profiles; a replay that only reports triggers does
    not (its states then carry the empty profile). Scene user filters need it.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        store: StateStore | None = None,
        limits: Limits | None = None,
        track_profile: bool = True,
    ) -> None:
        self.scenes = tuple(scenes)
        self.limits = limits or Limits()
        self.store: StateStore = store if store is not None else MemoryStore()
        self.clock: int = _NEG_INF
        self.track_profile = track_profile
        self._seq = 0
        # User-filter refusals since the last take_refusals() (rare: only
        # where a scene would have fired), and how many the bound dropped.
        self._refusals: list[Refusal] = []
        self.refusals_dropped = 0
        # Triggers the per-user budget refused, per scene (triggers.budget).
        self.budget_refused: Counter[str] = Counter()
        self._timers: list[tuple[int, int, str, str]] = []  # (deadline, seq, scene, user)
        # Rules in config order, timer rules in the same list, so that state
        # transitions happen in config order too.
        kinds = [kind_of(scene) for scene in self.scenes]
        self._rules: list[Rule] = [k.rule(s, self.limits) for k, s in zip(kinds, self.scenes,
                                                                          strict=True)]
        self._predicates = [k.predicates(s) for k, s in zip(kinds, self.scenes, strict=True)]
        # Scenes that fire from the clock (their triggers are timers).
        self.timer_scenes = frozenset(r.name for r in self._rules if r.timer)
        # Timer scenes with a `user` filter, checked when their timer is due.
        self._timer_users: dict[str, UserFilter] = {
            r.name: r.user for r in self._rules if r.timer and r.user is not None}
        # Timer rules that arm their next period once fired (the date kind).
        self._periodic: dict[str, Any] = {
            r.name: r for r in self._rules if r.timer and hasattr(r, "fired")}
        self.periodic_scenes = frozenset(self._periodic)
        # (scene, user, deadline, fired, arm seq of the next period) of every
        # consumed periodic timer, in order; kept only when a caller asks
        # (sharded replay orders the next periods' armings by it).
        self.periodic_log: list[tuple[str, str, int, bool, int | None]] | None = None
        # Timer scenes whose trigger names a key (a catalog digest's products).
        self._due_keys: dict[str, DueKey] = {
            r.name: k for r in self._rules if r.timer and (k := getattr(r, "due_key", None))}
        if not track_profile and (any(s.user is not None for s in self.scenes)
                                  or any(k.reads_profile for k in kinds)):
            raise ValueError("scenes with a `user` filter or a kind that reads the profile "
                             "need track_profile=True")
        # The rules an event type can touch, in config order (see _rules_for).
        self._by_type: dict[object, _Plan] = {}  # keyed by type strings only
        # A MemoryStore's dict, used directly on the hot path (get/put are no-ops around it).
        self._states = self.store._states if type(self.store) is MemoryStore else None
        # A config experiment (Arm): its users' rules, held by a second engine
        # used only for its rule plans; None when no experiment runs.
        self._takes: Callable[[str], bool] | None = None
        self._cand: Engine | None = None

    # -- the two inputs -------------------------------------------------------

    def handle(self, event: Event) -> list[Trigger]:
        """Take one event: first fire timers made due by the clock moving to
        the event's time, then apply the event and return its own triggers."""
        user_id, ts, _, fields = event  # one unpacking: cheaper than three attributes
        fired: list[Trigger] = []
        clock = self.clock
        if ts > clock:
            self.clock = clock = ts
        timers = self._timers
        if timers and timers[0][0] < clock:
            # made due by this event's time, or armed late by an earlier old event
            fired = self._fire_due()
        states = self._states
        if states is not None:
            state = states.get(user_id)
            if state is None:
                state = states[user_id] = UserState()
        else:
            found = self.store.get(user_id)
            state = UserState() if found is None else found
        max_ts = state.max_ts
        if max_ts is None or ts > max_ts:
            state.max_ts = ts
        if self.track_profile:
            state.profile.update(event)
        etype = fields.get("type")
        plans = self
        if self._takes is not None and self._takes(user_id):
            plans = self._cand  # type: ignore[assignment]  # set with _takes
        try:
            rules = plans._by_type[etype]  # only strings are cached
        except (KeyError, TypeError):  # TypeError: an unhashable (bad) type value
            rules = plans._rules_for(etype)
        for rule, first, second, gate, timer in rules:
            if gate is not None and not gate(fields):
                continue  # the one predicate left to test fails: the rule does nothing
            got = rule.apply(state, fields, ts, first, second)
            if got is False:
                continue
            if timer:  # a deadline to (re)arm, or None: disarm
                if type(got) is int:
                    self._seq = seq = self._seq + 1
                    state.timer[rule.name] = (got, seq)
                    heapq.heappush(timers, (got, seq, rule.name, user_id))
                else:
                    state.timer.pop(rule.name, None)
                continue
            if type(got) is Refused:  # checked only where the scene would fire
                self._refuse(rule.name, rule.user, user_id, got.key, ts, got.had)
                continue
            if self.limits.budget is not None and not self._within_budget(
                    rule.name, user_id, state, got, ts):  # type: ignore[arg-type]
                continue
            fired.append(Trigger(rule.name, user_id, got, ts))  # type: ignore[arg-type]
        if states is None:
            self.store.put(user_id, state)
        return fired

    def _rules_for(self, etype: object) -> _Plan:
        """The rules whose predicates can hold for an event of this `type`:
        a rule none of whose predicates can match leaves the state untouched,
        so skipping it changes nothing. With each rule come its two predicates'
        results when they depend on `type` alone (else None: test the event),
        and a gate: when one is known not to hold and the other must be
        tested, that test, done before the rule is called (the rule then
        gets True for it). Cached per type string (bounded)."""
        if type(etype) is not str:
            return tuple((rule, None, None, None, rule.timer) for rule in self._rules)
        plan: list[_Step] = []
        for rule, predicates in zip(self._rules, self._predicates, strict=True):
            if not any(p is not None and _type_may_hold(p, etype) for p in predicates):
                continue
            first, second = predicates[0], predicates[1] if len(predicates) > 1 else None
            known = (_known(first, etype), _known(second, etype))
            gated = len(predicates) <= 2  # a third predicate may still hold
            if gated and known == (None, False) and first is not None:
                plan.append((rule, True, False, first.compile(), rule.timer))
            elif gated and known == (False, None) and second is not None:
                plan.append((rule, False, True, second.compile(), rule.timer))
            else:
                plan.append((rule, known[0], known[1], None, rule.timer))
        rules = tuple(plan)
        if len(self._by_type) < _MAX_TYPES_CACHED:
            self._by_type[etype] = rules
        return rules

    @property
    def arm_count(self) -> int:
        """How many timers have been armed so far (the last arming's sequence number)."""
        return self._seq

    def advance(self, now_ms: int) -> list[Trigger]:
        """Move the clock forward (never back) and fire every timer now due."""
        if now_ms > self.clock:
            self.clock = now_ms
        if self._timers and self._timers[0][0] < self.clock:
            return self._fire_due()
        return []

    # -- timers ---------------------------------------------------------------

    def _fire_due(self) -> list[Trigger]:
        fired: list[Trigger] = []
        timers = self._timers
        clock = self.clock
        store = self.store
        users = self._timer_users
        while timers and timers[0][0] < clock:
            deadline, seq, scene, user_id = heapq.heappop(timers)
            state = store.get(user_id)
            if state is None or state.timer.get(scene) != (deadline, seq):
                continue  # cancelled or re-armed since: a stale heap entry
            key = self._due_keys[scene](state, deadline) if scene in self._due_keys else None
            del state.timer[scene]
            # A filtered-out user's timer is consumed all the same: the episode
            # (start, then `after` of silence) is over either way.
            if self._takes is not None and self._takes(user_id):
                users = self._cand._timer_users  # type: ignore[union-attr]
            else:
                users = self._timer_users
            user = users.get(scene) if users else None
            had = None if user is None else user.refuses(state.profile, deadline)
            if had is not None:
                self._refuse(scene, user, user_id, key, deadline, had)
            elif self.limits.budget is None or self._within_budget(
                    scene, user_id, state, key, deadline):
                fired.append(Trigger(scene, user_id, key, deadline))
            periodic = self._periodic.get(scene)
            if periodic is not None:  # consumed either way: the next period arms now
                following = periodic.fired(state, deadline)
                armed = None
                if following is not None:
                    self._seq = armed = self._seq + 1
                    state.timer[scene] = (following, armed)
                    heapq.heappush(timers, (following, armed, scene, user_id))
                if self.periodic_log is not None:
                    given = bool(fired) and fired[-1].scene == scene and \
                        fired[-1].user_id == user_id and fired[-1].ts == deadline
                    self.periodic_log.append((scene, user_id, deadline, given, armed))
            store.put(user_id, state)
        return fired

    # -- refusals -------------------------------------------------------------

    def _refuse(self, scene: str, user: UserFilter | None, user_id: str, key: str | None,
                ts: int, had: frozenset[str]) -> None:
        if user is None:
            return
        if len(self._refusals) >= MAX_PENDING_REFUSALS:
            self.refusals_dropped += 1
            return
        self._refusals.append(Refusal(scene, user_id, key, ts, user.describe(), tuple(sorted(had))))

    def _within_budget(self, scene: str, user_id: str, state: UserState, key: str | None,
                       ts: int) -> bool:
        """Whether the user's trigger budget takes this trigger (recorded in
        the state if so); else a refusal is recorded, never dropped silently."""
        budget = self.limits.budget
        assert budget is not None
        if budget.take(state.budget, ts):
            return True
        self.budget_refused[scene] += 1
        if len(self._refusals) >= MAX_PENDING_REFUSALS:
            self.refusals_dropped += 1
        else:
            self._refusals.append(Refusal(scene, user_id, key, ts, budget.describe(), (),
                                          REFUSED_BUDGET))
        return False

    @property
    def has_refusals(self) -> bool:
        return bool(self._refusals)

    def take_refusals(self) -> list[Refusal]:
        """The user-filter refusals since the last call, in the order they
        happened (a scene that would have fired, for a user its filter
        refused: the filter and what the profile had)."""
        refusals = self._refusals
        if not refusals:
            return []
        self._refusals = []
        return refusals

    def next_deadline(self) -> int | None:
        """The earliest live deadline (for a sweeper deciding when to wake)."""
        while self._timers:
            deadline, seq, scene, user_id = self._timers[0]
            state = self.store.get(user_id)
            if state is not None and state.timer.get(scene) == (deadline, seq):
                return deadline
            heapq.heappop(self._timers)
        return None

    def pending_timers(self) -> list[PendingTimer]:
        """Armed timers not yet fired, in firing order."""
        pending = []
        for deadline, seq, scene, user_id in sorted(self._timers):
            state = self.store.get(user_id)
            if state is not None and state.timer.get(scene) == (deadline, seq):
                pending.append(PendingTimer(scene, user_id, deadline))
        return pending

    def arm(self, user_id: str, state: UserState, scene: str, deadline: int) -> None:
        """Arm ``scene``'s timer of ``user_id`` at ``deadline`` in ``state``
        (which the caller then puts): a timer carried over by an identity merge."""
        self._seq = seq = self._seq + 1
        state.timer[scene] = (deadline, seq)
        names = self.timer_scenes
        if self._takes is not None and self._takes(user_id):  # the user's arm's, as rebuild_timers
            names = self._cand.timer_scenes  # type: ignore[union-attr]
        if scene in names:
            heapq.heappush(self._timers, (deadline, seq, scene, user_id))

    def rebuild_timers(self, users: Iterable[tuple[str, UserState]] | None = None) -> int:
        """Rebuild the timer heap from stored state (after a restart or a
        rebalance); returns how many timers are armed."""
        timers = []
        # A timer kept in state for a scene a reload removed stays dropped.
        base = self.timer_scenes
        source = self.store.items() if users is None else users
        for user_id, state in source:
            names = base
            if self._takes is not None and self._takes(user_id):
                names = self._cand.timer_scenes  # type: ignore[union-attr]
            for scene, (deadline, seq) in state.timer.items():
                self._seq = max(self._seq, seq)
                if scene in names:
                    timers.append((deadline, seq, scene, user_id))
        heapq.heapify(timers)
        self._timers = timers
        return len(timers)

    # -- housekeeping ---------------------------------------------------------

    def reconfigure(self, scenes: Sequence[Scene], limits: Limits | None = None,
                    arm: Arm | None = None) -> None:
        """Swap in new scenes (hot reload) keeping user state that stays valid.

        State is keyed by scene name, so a scene that keeps its name and shape
        keeps its windows, cooldowns and armed timer (with the deadline it was
        armed with). What a changed ``kind``, ``per``, ``when``/``unless`` or
        ``start`` invalidates, and the state of removed scenes, is dropped
        from every user (:mod:`triggers.reshape`), timers included.

        ``arm``: a config experiment's candidate scenes for its users. Each
        user's state is reshaped from the scenes they ran to the ones they
        run now (the start, a promote and a rollback of an experiment alike).
        """
        fresh = Engine(scenes, self.store, limits or self.limits, self.track_profile)
        cand = None if arm is None else Engine(arm.scenes, self.store, fresh.limits,
                                               self.track_profile)
        if self._takes is None and arm is None:
            plan = resets(self.scenes, fresh.scenes)
            self._take_rules(fresh)
            # A scene changed shape: one pass over every user (reloads are rare).
            reset_store(self.store, plan)
            names = {name for name in self.timer_scenes
                     if not (name in plan and (plan[name].timer or plan[name].everything))}
            kept = [t for t in self._timers if t[2] in names]
            if len(kept) != len(self._timers):
                heapq.heapify(kept)
                self._timers = kept
            return
        old_takes, old_cand = self._takes, self._cand
        before = (self.scenes, old_cand.scenes if old_cand is not None else self.scenes)
        after = (fresh.scenes, cand.scenes if cand is not None else fresh.scenes)
        plans = {(was, now): resets(before[was], after[now]) for was in (0, 1) for now in (0, 1)}
        if any(plans.values()):
            for user_id, _ in self.store.items():
                was = int(old_takes is not None and old_takes(user_id))
                now = int(arm is not None and arm.takes(user_id))
                state = self.store.get(user_id) if plans[(was, now)] else None
                if state is not None and apply_resets(state, plans[(was, now)]):
                    self.store.put(user_id, state)
        self._take_rules(fresh)
        self._takes, self._cand = (None, None) if arm is None else (arm.takes, cand)
        self.rebuild_timers()

    def set_arm(self, arm: Arm | None) -> None:
        """Run ``arm`` from now on without reshaping any state (a worker built
        while an experiment runs: its states were written under it)."""
        self._takes, self._cand = (None, None) if arm is None else (
            arm.takes, Engine(arm.scenes, self.store, self.limits, self.track_profile))

    def _take_rules(self, fresh: Engine) -> None:
        self.scenes, self.limits = fresh.scenes, fresh.limits
        self._rules = fresh._rules
        self._predicates = fresh._predicates
        self._timer_users = fresh._timer_users
        self._due_keys = fresh._due_keys
        self.timer_scenes = fresh.timer_scenes
        self._by_type = fresh._by_type

    @property
    def arm_scenes(self) -> tuple[Scene, ...]:
        """A running experiment's candidate scenes (none without one)."""
        return () if self._cand is None else self._cand.scenes

    def in_arm(self, user_id: str) -> bool:
        """The user runs the experiment's candidate scenes."""
        return self._takes is not None and self._takes(user_id)

    def prune_user(self, user_id: str) -> None:
        """Drop a user's expired window entries and cooldowns (never profiles)."""
        state = self.store.get(user_id)
        if state is None:
            return
        rules = self._cand._rules if self._cand is not None and self.in_arm(user_id) \
            else self._rules  # the user's own arm's windows
        for rule in rules:
            rule.prune(state)
        self.store.put(user_id, state)


def _known(predicate: Predicate | None, etype: str) -> bool | None:
    """The predicate's result if it only looks at `type` (an absent one never
    holds); None when it must be tested on the event."""
    if predicate is None:
        return False
    if any(name != "type" for name, _ in predicate.conditions):
        return None
    return all(cond.holds(etype) for _, cond in predicate.conditions)


def _type_may_hold(predicate: Predicate, etype: str) -> bool:
    """False only when the predicate's `type` condition rejects this type."""
    return all(cond.holds(etype) for name, cond in predicate.conditions if name == "type")
