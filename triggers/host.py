"""The one engine host: raw input and a clock in, triggers and rejects out.

Every runtime (replay, sharded replay, the demo, the Faust worker's
partitions) feeds its engine through an :class:`EngineHost`, so the input
rules are applied in one place: the line-size limit, event decoding, the
identifier limits of the config (``user_id`` and every scene's ``per`` field),
the clock policy and the counts of events taken, rejected (by reason) and
triggers fired (per scene, in config order). What a runtime adds around it
(files and progress, Kafka offsets and acks, a simulated clock and a web page)
stays in its adapter. Like the engine, nothing here does I/O.

Clock policies (SEMANTICS.md, "Time"):

* ``event``: the clock is the largest event ``ts`` seen; ``tick`` fires what
  that clock made due. Replay, sharded replay, the demo (which then moves the
  clock to its simulated now with :meth:`EngineHost.advance`) and
  ``worker --clock event``.
* ``wall``: before each event the clock moves to the caller's ``now_ms``
  (the worker's default).

Event time is bounded against the wall clock (:func:`check_future`, the one
rule the collector, ``produce`` and the worker apply, each passing its wall
clock): under the wall clock an event more than ``engine.max_future``
(default 1 h) ahead is rejected as ``future_ts`` (dead-lettered): a view
stamped year 9999 fired, and its cooldown then held the scene until 9999.
Under the event clock the bound is ``engine.max_future_event_clock``, off by
default (replay and backfills read no wall clock, so their output does not
depend on when they run).

Identity (docs/audiences.md, "Identity"; docs/semantics-notes.md): an
:data:`IDENTIFY` event ``{"user_id": A, "known_id": K}`` says anonymous id A
is known user K from now on. The host owns the rule, in two halves that a
runtime holding both ids runs together (:meth:`EngineHost.identify`) and the
worker runs on the two ids' partitions (:meth:`EngineHost.detach` on A's,
:meth:`EngineHost.absorb` on K's): A's state is taken out and folded into
K's (:func:`triggers.merge.merge_states`, armed timers re-armed for K), and
every later event of A is applied as K's (:meth:`EngineHost.resolve`).
The identify event itself is not given to the engine (no profile count).
Who may merge is :func:`triggers.merge.identify_refusal`: K is resolved
through the aliases, a known user is never re-pointed by an identify (an
:data:`~triggers.merge.ADMIN_MERGE` may), a cycle is refused; a refused
statement is counted as a reject with its reason and kept for the caller
(:meth:`EngineHost.take_identity_refusals`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from triggers.audiences.record import REASON_CONDITION
from triggers.audiences.tracker import AudienceTracker
from triggers.durations import format_duration_ms
from triggers.engine import Arm, Engine
from triggers.errors import EventRejected
from triggers.events import (
    DEFAULT_MAX_ID_CHARS,
    DEFAULT_MAX_LINE_BYTES,
    REASON_FUTURE_TS,
    Event,
    IdLimits,
    Refusal,
    Trigger,
    decode_event_line,
    decode_event_record,
    event_from_mapping,
)
from triggers.kinds import kind_of
from triggers.merge import ADMIN_MERGE, REASON_NO_KNOWN_ID, identify_refusal, merge_states
from triggers.scenes import Limits, Scene
from triggers.state import StateStore, UserState

IDENTIFY = "identify"  # anonymous user_id is known_id from now on
MERGE = "merge"  # the worker's hand-over of an identified anonymous id's state
IDENTITY_TYPES = frozenset({IDENTIFY, ADMIN_MERGE})
ClockPolicy = Literal["event", "wall"]
CLOCK_POLICIES: tuple[ClockPolicy, ...] = ("event", "wall")
# A decoded record as the file readers yield it: (line number, event or why not).
Record = tuple[int, "Event | EventRejected"]
TriggerSink = Callable[[Trigger], None]
RejectSink = Callable[[int, EventRejected], None]
DEFAULT_MAX_FUTURE_MS = 3_600_000  # engine.max_future


def check_future(ts: int, now_ms: int, max_future_ms: int | None) -> None:
    """Raise ``future_ts`` for an event time more than ``max_future_ms``
    ahead of the wall clock ``now_ms`` (None: no bound). The one rule of
    event time against the wall clock: collector, ``produce`` and worker."""
    if max_future_ms is not None and ts - now_ms > max_future_ms:
        raise EventRejected(REASON_FUTURE_TS, f"ts {ts} is {format_duration_ms(ts - now_ms)} "
                            f"ahead of the clock ({now_ms}); the limit is "
                            f"{format_duration_ms(max_future_ms)} (engine.max_future)")


@dataclass(frozen=True, slots=True)
class InputRules:
    """How raw input is read (the ``engine:`` config section's input part).
    ``max_future_ms`` bounds event time against the wall clock under the
    wall clock policy, ``max_future_event_clock_ms`` under the event clock
    (None: no bound; :func:`check_future`)."""

    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_id_chars: int = DEFAULT_MAX_ID_CHARS
    max_future_ms: int | None = DEFAULT_MAX_FUTURE_MS
    max_future_event_clock_ms: int | None = None


@dataclass
class HostCounts:
    """What a host took: events, rejects by reason, triggers per scene
    (every configured scene listed, in config order, from zero)."""

    taken: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    triggers: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class EngineHost:
    """One engine behind the config's input rules and a clock policy.

    ``store``/``track_profile`` go to the :class:`~triggers.engine.Engine`
    (see there). Use :meth:`around` to host an engine built elsewhere.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        limits: Limits | None = None,
        rules: InputRules | None = None,
        *,
        store: StateStore | None = None,
        track_profile: bool = True,
        clock: ClockPolicy = "event",
    ) -> None:
        self._init(Engine(scenes, store, limits, track_profile), rules or InputRules(), clock)

    @classmethod
    def around(cls, engine: Engine, rules: InputRules | None = None,
               clock: ClockPolicy = "event") -> EngineHost:
        """A host for an existing engine (default input rules unless given)."""
        host = cls.__new__(cls)
        host._init(engine, rules or InputRules(), clock)
        return host

    def _init(self, engine: Engine, rules: InputRules, clock: ClockPolicy) -> None:
        if clock not in CLOCK_POLICIES:
            raise ValueError(f"clock must be one of {', '.join(CLOCK_POLICIES)}, not {clock!r}")
        self.engine = engine
        self.rules = rules
        self.event_clock = clock == "event"
        self.counts = HostCounts()
        # Identified anonymous id -> known user id. The worker points this at
        # its partition store's dict, which persists it.
        self.aliases: dict[str, str] = {}
        # Known user id -> the ids merged into it (each with a position the
        # worker uses; -1 here). Its keys are the known users an identify may
        # not re-point. The worker points this at its store's dict too.
        self.merged: dict[str, dict[str, int]] = {}
        # Refused identity statements not yet taken (bounded: a caller that
        # never takes them keeps only the latest).
        self._identity_refusals: deque[tuple[Event, EventRejected]] = deque(maxlen=1024)
        # The live audiences (an `audiences:` config): fed every event, fire
        # and clock move after the engine (triggers.audiences.tracker).
        self.audiences: AudienceTracker | None = None
        self._configured()

    def _configured(self) -> None:
        engine = self.engine
        every = engine.scenes + engine.arm_scenes  # an experiment's candidate scenes too
        self.ids = IdLimits.of(self.rules.max_id_chars, every)
        self.timer_scenes = engine.timer_scenes | {s.name for s in engine.arm_scenes
                                                   if kind_of(s).timer}
        for scene in every:
            self.counts.triggers.setdefault(scene.name, 0)

    @property
    def scenes(self) -> tuple[Scene, ...]:
        return self.engine.scenes

    @property
    def clock(self) -> int:
        return self.engine.clock

    # -- decoding -------------------------------------------------------------

    def decode(self, line: bytes) -> Event:
        """One JSON line (without its newline) as an event, or
        :class:`EventRejected` (counted) with a stable reason."""
        try:
            return decode_event_line(line, self.rules.max_line_bytes, self.ids)
        except EventRejected as exc:
            self.counts.rejected[exc.reason] += 1
            raise

    def decode_record(self, value: bytes,
                      now_ms: int | None = None) -> list[Event | EventRejected]:
        """One Kafka record's events (one event, or a batch: a JSON array),
        each decoded or rejected (counted) alone, in order
        (:func:`triggers.events.decode_event_record`); with the wall clock
        ``now_ms``, an event too far ahead of it is rejected (:meth:`future`)."""
        items = decode_event_record(value, self.rules.max_line_bytes, self.ids)
        bound = self.max_future_ms if now_ms is not None else None
        for i, item in enumerate(items):
            if type(item) is not Event:
                self.counts.rejected[item.reason] += 1  # type: ignore[union-attr]
            elif bound is not None and item.ts - now_ms > bound:  # type: ignore[operator]
                items[i] = self.future(item, now_ms) or item  # type: ignore[arg-type]
        return items

    @property
    def max_future_ms(self) -> int | None:
        """How far event time may run ahead of the wall clock under this
        host's clock policy (None: no bound)."""
        rules = self.rules
        return rules.max_future_event_clock_ms if self.event_clock else rules.max_future_ms

    def future(self, event: Event, now_ms: int) -> EventRejected | None:
        """The event's rejection (counted) when its time is too far ahead of
        the wall clock ``now_ms`` (:func:`check_future`), else None."""
        try:
            check_future(event.ts, now_ms, self.max_future_ms)
        except EventRejected as exc:
            self.counts.rejected[exc.reason] += 1
            return exc
        return None

    def bounded(self, records: Iterable[Record], now_ms: int) -> Iterator[Record]:
        """Decoded records with the events too far ahead of the wall clock
        ``now_ms`` rejected (replay's reader under ``max_future_event_clock``);
        :meth:`feed` counts the rejections it takes."""
        bound = self.max_future_ms
        for number, item in records:
            if bound is not None and type(item) is Event:
                try:
                    check_future(item.ts, now_ms, bound)
                except EventRejected as exc:
                    yield number, exc
                    continue
            yield number, item

    def decode_mapping(self, obj: Any) -> Event:
        """A decoded JSON value (a dict from an in-process source) as an event."""
        try:
            return event_from_mapping(obj, self.ids)
        except EventRejected as exc:
            self.counts.rejected[exc.reason] += 1
            raise

    def reject(self, exc: EventRejected) -> None:
        """Count a rejection made by a reader of another format."""
        self.counts.rejected[exc.reason] += 1

    # -- identity -------------------------------------------------------------

    def known_id(self, event: Event) -> str | None:
        """An identify event's known user id, None when it has no usable one
        (missing, not a string, empty, the anonymous id itself, too long)."""
        known = event.fields.get("known_id")
        if (not isinstance(known, str) or not known or known == event.user_id
                or len(known) > self.rules.max_id_chars):
            return None
        return known

    def resolve(self, event: Event) -> Event:
        """The event as it is applied: an identified anonymous id's event is
        the known user's (``user_id`` replaced, ``anonymous_id`` added)."""
        known = self.aliases.get(event.user_id) if self.aliases else None
        if known is None:
            return event
        fields = {**event.fields, "user_id": known, "anonymous_id": event.user_id}
        return event._replace(user_id=known, fields=fields)

    def detach(self, anonymous_id: str, known_id: str) -> UserState | None:
        """Identify, the anonymous half: from now on ``anonymous_id`` is
        ``known_id``; its state (None if it has none) is taken out of the store
        for :meth:`absorb`. A second identify re-points the alias (a shared
        device's next login); the id has no state left then."""
        store = self.engine.store
        state = store.get(anonymous_id)
        if state is not None:
            store.delete(anonymous_id)  # its heap entries go stale, never fire
            if self.audiences is not None:  # the id is no one now: it leaves its audiences
                self.audiences.leave_all(anonymous_id, state, self.engine.clock, REASON_CONDITION)
        self.aliases[anonymous_id] = known_id
        return state

    def absorb(self, known_id: str, anonymous: UserState) -> None:
        """Identify, the known half: fold an anonymous id's state into
        ``known_id``'s (:func:`triggers.merge.merge_states`); a timer the
        anonymous id armed that the merge keeps is re-armed for ``known_id``."""
        engine = self.engine
        store = engine.store
        known = store.get(known_id)
        merged = merge_states(known, anonymous, engine.limits.max_window_entries)
        own = known.timer if known is not None else {}
        for scene, (deadline, seq) in list(merged.timer.items()):
            if own.get(scene) != (deadline, seq):
                engine.arm(known_id, merged, scene, deadline)
        store.put(known_id, merged)
        if self.audiences is not None:  # the merged profile may change K's audiences
            self.audiences.after(None, ())
            self.audiences.evaluate(known_id, engine.clock)

    def identity_target(self, event: Event) -> str:
        """The known user an identify (or admin merge) event points its id at,
        resolved through the aliases; :class:`EventRejected` (counted) when the
        statement is refused (:func:`triggers.merge.identify_refusal`)."""
        known = self.known_id(event)
        refusal: tuple[str, str] | None
        if known is None:
            refusal = (REASON_NO_KNOWN_ID, "known_id is missing, not a string, empty, the "
                       "id itself or too long")
        else:
            refusal = identify_refusal(event.user_id, known, self.aliases, self.merged,
                                       admin=event.type == ADMIN_MERGE)
        if refusal is not None:
            self.counts.rejected[refusal[0]] += 1
            raise EventRejected(*refusal)
        assert known is not None
        return self.aliases.get(known, known)

    def note_merged(self, known_id: str, anonymous_id: str) -> None:
        """``anonymous_id`` is merged into ``known_id`` (a known user from now on)."""
        self.merged.setdefault(known_id, {}).setdefault(anonymous_id, -1)

    def repoint(self, old_id: str, known_id: str) -> list[str]:
        """An admin merge of ``old_id`` into ``known_id``: the ids that stood for
        ``old_id`` stand for ``known_id`` (no chain is left); returns them."""
        moved = [anonymous for anonymous in self.merged.pop(old_id, ())
                 if self.aliases.get(anonymous) == old_id]  # not re-pointed or erased since
        for anonymous in moved:
            self.aliases[anonymous] = known_id
            self.note_merged(known_id, anonymous)
        return moved

    def identify(self, event: Event, now_ms: int | None = None) -> list[Trigger]:
        """An identify (or admin merge) event where one host holds both ids
        (replay, demo): the clock moves to the event first (timers then due
        fire under the id that armed them), then :meth:`detach` and
        :meth:`absorb`. A refused one changes nothing
        (:meth:`take_identity_refusals`)."""
        fired = self.advance(event.ts if self.event_clock or now_ms is None else now_ms)
        try:
            known = self.identity_target(event)
        except EventRejected as exc:
            self._identity_refusals.append((event, exc))
            return fired
        self.counts.taken += 1
        state = self.detach(event.user_id, known)
        if state is not None:
            self.absorb(known, state)
        self.note_merged(known, event.user_id)
        if event.type == ADMIN_MERGE:
            self.repoint(event.user_id, known)
        return fired

    def take_identity_refusals(self) -> list[tuple[Event, EventRejected]]:
        """The identity statements refused since the last call, with why."""
        out = list(self._identity_refusals)
        self._identity_refusals.clear()
        return out

    # -- the engine -----------------------------------------------------------

    def take(self, event: Event, now_ms: int | None = None) -> list[Trigger]:
        """Apply one event (an identify is :meth:`identify`; an identified
        anonymous id's event is the known user's). Under the wall clock the
        clock first moves to ``now_ms``, firing what that made due (those
        triggers come first)."""
        if event.fields.get("type") in IDENTITY_TYPES:
            return self.identify(event, now_ms)
        if self.aliases:
            event = self.resolve(event)
        engine = self.engine
        audiences = self.audiences
        if audiences is not None:
            # What the clock makes due is evaluated on the state before the
            # event (a purchase must not hide an older one from a timer's time).
            fired = engine.advance(event.ts if self.event_clock or now_ms is None else now_ms)
            audiences.after(None, fired)
            audiences.advance(engine.clock)
            own = engine.handle(event)
            audiences.after(event, own)
            fired += own
        elif self.event_clock or now_ms is None:
            fired = engine.handle(event)
        else:
            fired = engine.advance(now_ms)
            fired += engine.handle(event)
        counts = self.counts
        counts.taken += 1
        if fired:
            scenes = counts.triggers
            for trig in fired:
                scenes[trig.scene] += 1
        return fired

    def take_refusals(self) -> list[Refusal]:
        """The engine's user-filter refusals since the last call
        (:meth:`Engine.take_refusals`)."""
        return self.engine.take_refusals()

    def advance(self, now_ms: int) -> list[Trigger]:
        """Move the clock to ``now_ms`` (never back); the timers that made due."""
        fired = self.engine.advance(now_ms)
        if self.audiences is not None:
            self.audiences.after(None, fired)
            self.audiences.advance(self.engine.clock)
        if fired:
            scenes = self.counts.triggers
            for trig in fired:
                scenes[trig.scene] += 1
        return fired

    def tick(self, now_ms: int) -> list[Trigger]:
        """A clock tick: fire what is due by the host's clock (the event
        clock ignores ``now_ms``)."""
        return self.advance(self.engine.clock if self.event_clock else now_ms)

    def due(self, now_ms: int) -> int | None:
        """The deadline of a timer due by the host's clock now, else None."""
        deadline = self.engine.next_deadline()
        if self.audiences is not None:
            due = self.audiences.next_deadline()
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        if deadline is None:
            return None
        clock = self.engine.clock if self.event_clock else now_ms
        return deadline if deadline < clock else None

    def is_timer(self, scene: str) -> bool:
        """Whether the scene fires from the clock (its triggers are timers)."""
        return scene in self.timer_scenes

    def feed(self, records: Iterable[Record], on_trigger: TriggerSink,
             on_reject: RejectSink | None = None,
             every_1024: Callable[[int], None] | None = None) -> int:
        """Take decoded records in order (replay's loop); triggers go to
        ``on_trigger`` in firing order. ``every_1024(read)`` runs after every
        1024th record. Returns how many records were read."""
        handle = self.engine.handle
        counts = self.counts
        scenes = counts.triggers
        rejected = counts.rejected
        read = taken = 0
        try:
            for number, item in records:
                read += 1
                if type(item) is EventRejected:
                    rejected[item.reason] += 1
                    if on_reject is not None:
                        on_reject(number, item)
                elif (self.aliases or self.audiences is not None
                      or item[3].get("type") in IDENTITY_TYPES):  # type: ignore[index,operator]
                    for trig in self.take(item):  # type: ignore[arg-type]
                        on_trigger(trig)  # take() counted it
                    if self.audiences is not None:  # after the event's triggers
                        self.audiences.flush()
                    if self._identity_refusals:
                        for _, refused in self.take_identity_refusals():
                            if on_reject is not None:
                                on_reject(number, refused)
                else:
                    taken += 1
                    for trig in handle(item):  # type: ignore[arg-type]
                        scenes[trig.scene] += 1
                        on_trigger(trig)
                if every_1024 is not None and not read & 0x3FF:
                    every_1024(read)
        finally:
            counts.taken += taken
        return read

    def set_arm(self, arm: Arm | None) -> None:
        """A config experiment's candidate scenes, no state reshaped (:meth:`Engine.set_arm`)."""
        self.engine.set_arm(arm)
        self._configured()

    def reconfigure(self, scenes: Sequence[Scene], limits: Limits | None = None,
                    rules: InputRules | None = None, arm: Arm | None = None) -> None:
        """Hot reload (:meth:`Engine.reconfigure`, ``arm``: a config
        experiment's candidate scenes); the identifier limits follow the new
        scenes' ``per`` fields."""
        self.engine.reconfigure(scenes, limits, arm)
        if rules is not None:
            self.rules = rules
        self._configured()


def triggers_of(counts: Mapping[str, int], before: Mapping[str, int]) -> Counter[str]:
    """Per scene, what was fired since ``before`` (a copy of ``counts`` then)."""
    return Counter({name: n - before.get(name, 0) for name, n in counts.items()})
