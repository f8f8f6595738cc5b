"""The journey engine: triggers, feedback events and a clock in, actions out.

Waits and branch windows are timers on the same clock rule as scenes: a
deadline is due when the clock is strictly greater than it, and an event at
exactly the deadline still counts as inside the window. Timers sit in a heap
checked against the user's state when popped (like :class:`triggers.Engine`),
so a resolved branch never searches the heap. Actions decided by a timer
carry the deadline as ``ts``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping

from channels.policy.control import GLOBAL_CONTROL, in_control, in_global_control
from config.strategy_models import ControlModel
from strategies.actions import (
    Action,
    AudienceAction,
    EnrolAction,
    ExitAction,
    ScoreAction,
    SendAction,
    SuppressedAction,
    TagAction,
    UserContext,
)
from strategies.model import END, Case, Registry, Step, Strategy
from strategies.state import (
    MAX_SENT_IDS,
    MAX_TAGS,
    MAYBE_OTHERS,
    JourneyStore,
    JourneyUser,
    MemoryJourneyStore,
    Run,
)
from triggers.events import Event, Trigger

_NEG_INF = -(1 << 63)
# (user, strategy name, the run, the step it enters, ts): the report's step funnel
StepListener = Callable[[str, str, Run, Step, int], None]
PREFERS = "prefers_"
MAX_DEPTH = 8  # enrol chains within one instant
MAX_STEPS = 64  # instant steps taken per run per call (config has no loops without a wait)
MAX_CHANNELS = 16
# A consent change (channels.audience.consent_http): the user withdrew from a channel type.
UNSUBSCRIBED = "unsubscribed"
SUBSCRIBED = "subscribed"
OPTED_OUT = "unsubscribed:"  # tag prefix: the channel types the user withdrew from
# Branch event -> event types that satisfy it. Feedback types are the one
# vocabulary of channels.feedback.events (KINDS), as every sender emits them.
_EVENT_TYPES = {
    "opened": ("opened",),
    "clicked": ("clicked",),
    "shared": ("shared",),
    "delivered": ("delivered",),
    "converted": ("converted", "purchase"),
    "purchased": ("purchase", "converted"),
}


class JourneyEngine:
    """Runs every strategy of a :class:`Registry` for many users."""

    def __init__(self, registry: Registry, store: JourneyStore | None = None,
                 control: ControlModel | None = None,
                 channel_types: Mapping[str, str] | None = None,
                 on_step: StepListener | None = None) -> None:
        self.registry = registry
        self.on_step = on_step  # told of every step a run enters
        # channel name -> type (config ``channels:``): a consent change names the type.
        self.channel_types = dict(channel_types or {})
        self.store: JourneyStore = store if store is not None else MemoryJourneyStore()
        self.control = control or ControlModel()
        self.clock = _NEG_INF
        self._seq = 0
        self._timers: list[tuple[int, int, str, str]] = []  # (due, seq, user, strategy)

    # -- inputs -----------------------------------------------------------------

    def on_trigger(self, trigger: Trigger, ctx: UserContext | None = None) -> list[Action]:
        """A scene fired: enrol the user in every strategy whose entry matches."""
        out = self._move_clock(trigger.ts)
        ctx = ctx or UserContext()
        user = self._load(trigger.user_id, ctx)
        tags = frozenset(user.tags)
        for strategy in self.registry.strategies(trigger.user_id):
            scenes = strategy.entry.scenes
            if scenes is None or trigger.scene not in scenes:
                continue
            if not strategy.entry.holds(tags, ctx.segment):
                out.append(SuppressedAction(trigger.user_id, strategy.name, "entry_condition",
                                            trigger.scene, trigger.ts, strategy.version))
                continue
            self._enrol(trigger.user_id, user, strategy, trigger.ts, trigger.scene,
                        trigger.trigger_id, out, 0)
        self.store.put(trigger.user_id, user)
        return out

    def on_user(self, user_id: str, ctx: UserContext, now_ms: int) -> list[Action]:
        """Evaluate segment/tag entries (strategies without an entry scene),
        e.g. after the host updated the user's tags or segment."""
        out = self._move_clock(now_ms)
        user = self._load(user_id, ctx)
        tags = frozenset(user.tags)
        for strategy in self.registry.strategies(user_id):
            entry = strategy.entry
            if entry.scenes is None and entry.holds(tags, ctx.segment) \
                    and strategy.name not in user.runs:
                self._enrol(user_id, user, strategy, now_ms, "segment", None, out, 0)
        self.store.put(user_id, user)
        return out

    def on_event(self, event: Event) -> list[Action]:
        """A feedback (opened/clicked/shared/delivered/converted) or
        clickstream event: exit runs whose goal it meets, resolve branches
        waiting for it."""
        out = self._move_clock(event.ts)
        user = self.store.get(event.user_id)
        if user is None:
            return out
        fields = event.fields
        channel = fields.get("channel")
        if event.type == "opened" and isinstance(channel, str) and (
                channel in user.opens or len(user.opens) < MAX_CHANNELS):
            user.opens[channel] = user.opens.get(channel, 0) + 1
        if isinstance(channel, str) and fields.get("detail", "marketing") == "marketing":
            if event.type == UNSUBSCRIBED:
                self._opted_out(event.user_id, user, channel, event.ts, out)
            elif event.type == SUBSCRIBED:
                user.tags.discard(OPTED_OUT + channel)
        for name, run in list(user.runs.items()):
            strategy = self._strategy_of(name, run)
            if strategy is not None and strategy.goal is not None \
                    and strategy.goal.met(fields, run.entered_ms, event.ts):
                self._leave(event.user_id, user, name, run, "goal", event.ts, out)
                continue
            if strategy is None or run.due_ms is None or run.step >= len(strategy.steps):
                continue
            step = strategy.steps[run.step]
            if step.kind != "branch" or not run.step_ms <= event.ts <= run.due_ms:
                continue
            case = next((c for c in step.cases if _case_matches(c, event, run, name)), None)
            if case is not None:
                run.due_ms = None
                self._goto(run, strategy, case.target)
                self._run(event.user_id, user, name, run, event.ts, out, 0)
        self.store.put(event.user_id, user)
        return out

    def advance(self, now_ms: int) -> list[Action]:
        """Move the clock forward (never back) and fire every due wait/branch."""
        return self._move_clock(now_ms)

    def enrol(self, user_id: str, name: str, now_ms: int, via: str = "api",
              ctx: UserContext | None = None) -> list[Action]:
        """Enrol a user explicitly (bypasses the entry condition)."""
        out = self._move_clock(now_ms)
        strategy = self.registry.current(name, user_id)
        if strategy is None:
            return out
        user = self._load(user_id, ctx or UserContext())
        self._enrol(user_id, user, strategy, now_ms, via, None, out, 0)
        self.store.put(user_id, user)
        return out

    # -- queries ----------------------------------------------------------------

    def tags_of(self, user_id: str) -> frozenset[str]:
        user = self.store.get(user_id)
        return frozenset(user.tags) if user is not None else frozenset()

    def position(self, user_id: str, name: str) -> tuple[int, str] | None:
        """(version, step id) of the user's run in ``name``, if inside."""
        user = self.store.get(user_id)
        run = user.runs.get(name) if user is not None else None
        return None if run is None else (run.version, run.step_id)

    def next_deadline(self) -> int | None:
        while self._timers:
            due, seq, user_id, name = self._timers[0]
            if self._live(due, seq, user_id, name):
                return due
            heapq.heappop(self._timers)
        return None

    def rebuild_timers(self, users: Iterable[tuple[str, JourneyUser]] | None = None) -> int:
        """Rebuild the timer heap from stored state after a restart or rebalance."""
        timers = []
        for user_id, user in (self.store.items() if users is None else users):
            for name, run in user.runs.items():
                if run.due_ms is not None:
                    timers.append((run.due_ms, run.seq, user_id, name))
                    self._seq = max(self._seq, run.seq)
        heapq.heapify(timers)
        self._timers = timers
        return len(timers)

    # -- internals --------------------------------------------------------------

    def _load(self, user_id: str, ctx: UserContext) -> JourneyUser:
        user = self.store.get(user_id)
        if user is None:
            user = JourneyUser()
        for tag in ctx.tags:  # the host's tag store view is merged in
            if len(user.tags) < MAX_TAGS:
                user.tags.add(tag)
        return user

    def _move_clock(self, now_ms: int) -> list[Action]:
        if now_ms > self.clock:
            self.clock = now_ms
        out: list[Action] = []
        timers = self._timers
        while timers and timers[0][0] < self.clock:
            due, seq, user_id, name = heapq.heappop(timers)
            user = self.store.get(user_id)
            run = user.runs.get(name) if user is not None else None
            if user is None or run is None or run.due_ms != due or run.seq != seq:
                continue  # resolved or moved on since: a stale heap entry
            strategy = self._strategy_of(name, run)
            run.due_ms = None
            if strategy is None:
                self._version_gone(user_id, user, name, run, due, out)
            else:
                step = strategy.steps[run.step]
                self._goto(run, strategy, step.otherwise if step.kind == "branch"
                           else _next(step, strategy))
                self._run(user_id, user, name, run, due, out, 0)
            self.store.put(user_id, user)
        return out

    def _live(self, due: int, seq: int, user_id: str, name: str) -> bool:
        user = self.store.get(user_id)
        run = user.runs.get(name) if user is not None else None
        return run is not None and run.due_ms == due and run.seq == seq

    def _strategy_of(self, name: str, run: Run) -> Strategy | None:
        strategy = self.registry.get(name, run.version)
        if strategy is not None and strategy.digest == run.digest:
            return strategy
        return None

    def _version_gone(self, user_id: str, user: JourneyUser, name: str, run: Run, ts: int,
                      out: list[Action]) -> None:
        """The documented rule after a restart dropped the run's version: move
        to the current version's step with the same id (restarting that step),
        or leave with reason ``version_gone``."""
        current = self.registry.current(name, user_id)
        step = current.step_by_id(run.step_id) if current is not None else None
        if current is None or step is None:
            del user.runs[name]
            user.exits[name] = ts
            out.append(ExitAction(user_id, name, run.version, "version_gone", run.step_id, ts))
            return
        run.version, run.digest = current.version, current.digest
        self._goto(run, current, step.index)
        self._run(user_id, user, name, run, ts, out, 0)

    def _enrol(self, user_id: str, user: JourneyUser, strategy: Strategy, ts: int, via: str,
               trigger_id: str | None, out: list[Action], depth: int) -> None:
        name = strategy.name
        if name in user.runs:
            out.append(SuppressedAction(user_id, name, "in_progress", via, ts, strategy.version))
            return
        last_exit = user.exits.get(name)
        if strategy.reenter_after_ms is not None and last_exit is not None \
                and ts - last_exit < strategy.reenter_after_ms:
            out.append(SuppressedAction(user_id, name, "reenter_after", via, ts, strategy.version))
            return
        if in_global_control(self.control, user_id):
            out.append(SuppressedAction(user_id, name, GLOBAL_CONTROL, via, ts, strategy.version))
            return
        control = in_control(self.control, name, user_id, strategy.control_share)
        run = Run(strategy.version, strategy.digest, ts, via, trigger_id, control)
        run.step_id = strategy.steps[0].id
        user.runs[name] = run
        out.append(EnrolAction(user_id, name, strategy.version, via, ts, control, trigger_id))
        self._run(user_id, user, name, run, ts, out, depth)

    def _goto(self, run: Run, strategy: Strategy, target: int) -> None:
        run.step = target
        run.step_id = strategy.steps[target].id if target != END else ""

    def _run(self, user_id: str, user: JourneyUser, name: str, run: Run, ts: int,
             out: list[Action], depth: int) -> None:
        """Take instant steps until the run waits or leaves."""
        strategy = self._strategy_of(name, run)
        if strategy is None:
            return
        for _ in range(MAX_STEPS):
            if run.step == END:
                return self._leave(user_id, user, name, run, "end", ts, out)
            step = strategy.steps[run.step]
            run.step_ms = ts
            if self.on_step is not None:
                self.on_step(user_id, name, run, step, ts)
            kind = step.kind
            if kind == "branch":
                held = next((c for c in step.cases if c.tag is not None and c.tag in user.tags),
                            None)
                if held is not None:  # a tag case decides at once
                    self._goto(run, strategy, held.target)
                    continue
            if kind in ("wait", "branch"):
                self._seq += 1
                run.seq, run.due_ms = self._seq, ts + step.duration_ms
                heapq.heappush(self._timers, (run.due_ms, run.seq, user_id, name))
                return None
            if kind == "exit":
                return self._leave(user_id, user, name, run, "exit", ts, out)
            if kind == "send":
                if not run.control:
                    self._send(user_id, user, strategy, step, run, ts, out)
            elif kind == "tag":
                self._tag(user_id, user, name, step, ts, out)
            elif kind == "score":
                out.append(ScoreAction(user_id, float(step.score), name, step.id, ts))
            elif kind == "audience" and not run.control:  # held out: never synced either
                self._audience(user_id, user, name, step, ts, out)
            elif kind == "enrol":
                target = self.registry.current(step.enrol, user_id)
                if target is not None and depth < MAX_DEPTH:
                    self._enrol(user_id, user, target, ts, f"strategy:{name}", run.trigger_id,
                                out, depth + 1)
            self._goto(run, strategy, _next(step, strategy))
        return self._leave(user_id, user, name, run, "step_limit", ts, out)

    def _audience(self, user_id: str, user: JourneyUser, name: str, step: Step, ts: int,
                  out: list[Action]) -> None:
        """An audience step: a change only where the membership changes (a
        user already in is not added again, one not in is not removed)."""
        if user.audiences is None:  # a state from before they were kept
            user.audiences = {MAYBE_OTHERS}
        inside, user.audience_steps = user.audiences, True
        for audience, add in ((step.audience_remove, False), (step.audience_add, True)):
            if audience is None or ((audience in inside) == add and (
                    add or MAYBE_OTHERS not in inside)):
                continue
            if add:
                inside.add(audience)
            else:
                inside.discard(audience)
            out.append(AudienceAction(user_id, audience, add, name, step.id, ts))

    def _opted_out(self, user_id: str, user: JourneyUser, channel: str, ts: int,
                   out: list[Action]) -> None:
        """Remember the withdrawal (a tag); exit every run whose send steps
        use only channels the user has withdrawn from."""
        tag = OPTED_OUT + channel
        if len(user.tags) < MAX_TAGS or tag in user.tags:
            user.tags.add(tag)
        gone = {t[len(OPTED_OUT):] for t in user.tags if t.startswith(OPTED_OUT)}
        for name, run in list(user.runs.items()):
            strategy = self._strategy_of(name, run)
            if strategy is None:
                continue
            used = {c for step in strategy.steps if step.kind == "send" for c in step.channels}
            if used and all(c in gone or self.channel_types.get(c) in gone for c in used):
                self._leave(user_id, user, name, run, "opted_out", ts, out)

    def _leave(self, user_id: str, user: JourneyUser, name: str, run: Run, reason: str, ts: int,
               out: list[Action]) -> None:
        user.runs.pop(name, None)
        user.exits[name] = ts
        out.append(ExitAction(user_id, name, run.version, reason, run.step_id, ts))

    def _send(self, user_id: str, user: JourneyUser, strategy: Strategy, step: Step, run: Run,
              ts: int, out: list[Action]) -> None:
        channels = step.channels
        if step.respect_preference:
            channels = order_channels(channels, preferred_channel(user.tags))
        for channel in channels:
            message_id = (f"j|{strategy.name}|v{strategy.version}|{user_id}|{run.entered_ms}"
                          f"|{step.id}|{channel}")
            run.sent = [*run.sent, message_id][-MAX_SENT_IDS:]
            out.append(SendAction(user_id, channel, step.content, strategy.name, step.id,
                                  message_id, ts, strategy.version, run.trigger_id))

    def _tag(self, user_id: str, user: JourneyUser, name: str, step: Step, ts: int,
             out: list[Action]) -> None:
        for tag in step.tag_add:
            if tag.startswith(PREFERS):  # one preferred channel at a time
                for old in [t for t in user.tags if t.startswith(PREFERS) and t != tag]:
                    user.tags.discard(old)
                    out.append(TagAction(user_id, old, False, name, step.id, ts))
            if len(user.tags) < MAX_TAGS or tag in user.tags:
                user.tags.add(tag)
                out.append(TagAction(user_id, tag, True, name, step.id, ts))
        for tag in step.tag_remove:
            user.tags.discard(tag)
            out.append(TagAction(user_id, tag, False, name, step.id, ts))


def _next(step: Step, strategy: Strategy) -> int:
    return step.index + 1 if step.index + 1 < len(strategy.steps) else END


def preferred_channel(tags: Iterable[str]) -> str | None:
    prefs = sorted(t[len(PREFERS):] for t in tags if t.startswith(PREFERS))
    return prefs[0] if prefs else None


def order_channels(channels: tuple[str, ...], preferred: str | None) -> tuple[str, ...]:
    """The preferred channel becomes the first channel: moved to the front if
    the step lists it, otherwise it replaces the step's first channel."""
    if preferred is None or not channels or channels[0] == preferred:
        return channels
    rest = channels[1:] if preferred not in channels else tuple(
        c for c in channels if c != preferred)
    return (preferred, *rest)


def _case_matches(case: Case, event: Event, run: Run, name: str) -> bool:
    if case.event is None or event.type not in _EVENT_TYPES[case.event]:
        return False
    fields = event.fields
    if case.channel is not None and fields.get("channel") != case.channel:
        return False
    if event.type == "purchase":
        return True
    message_id = fields.get("message_id")
    if message_id is not None:
        return message_id in run.sent
    strategy = fields.get("strategy")
    return strategy is None or strategy == name
