"""One engine per events partition, with its state in the Faust table.

A partition's engine owns the users whose events land on that partition, its
timer heap and (with ``--clock event``) its clock. Its store
(:class:`agents.partition_store.PartitionStore`) reads through a bounded
cache and stages writes the agent flushes once the triggers they caused are
acknowledged; each stored value carries the position of the user's last
applied event (:mod:`agents.stored_state`), so an event redelivered after a
crash (at-least-once) is not applied twice. The partition's scene shapes are
kept beside the states: a host built from recovered state under other
shapes drops what a hot reload would have dropped, so a worker restarted
with a changed config does not read old-shape state as new.

An event of type :data:`ERASE` (``scenetrigger erase``) is not given to the
engine: the user's state is forgotten and, at the next settle, its key is
deleted from the table (a tombstone in the changelog), so a restarted
worker recovers nothing of the user.

Identity (docs/audiences.md): an :data:`IDENTIFY` event of anonymous id A
with ``known_id`` K stores the alias A -> K under the reserved key
:func:`agents.stored_state.alias_key` (A's partition), forgets A's state and puts two things in
:attr:`PartitionHost.outbox` for the agent to send to the events topic keyed
by K: a :data:`MERGE` event carrying A's state, which K's partition folds
into K's (:func:`triggers.merge.merge_states`), and afterwards every later
event of A, re-addressed to K. So K's partition sees A's history first, then
A's new events, in order. The rule of who may merge is the host's
(:meth:`EngineHost.identity_target`, :func:`triggers.merge.identify_refusal`),
checked here with this partition's aliases and known users; a refused
statement raises :class:`EventRejected` (the agent dead-letters it with its
reason). A forwarded record (a merge, a re-addressed event) is never
forwarded onward by the partition it lands on: on an id that is itself an
alias there (a chain or a cycle A's partition could not see), it goes back
to A's partition as a :data:`REPOINT` (at most :data:`MAX_RETURNS` times),
which re-points A to the resolved id and forwards it there itself, or, for
a cycle (the resolved id is A or one the record passed, :data:`PASSED`),
undoes its half (A stands for itself with its state back) and refuses the
record. The MERGE is sent even without state: it makes K a
known user on K's partition. An :data:`~triggers.merge.ADMIN_MERGE`
(``scenetrigger users merge A B``) is an identify that may move a known
user: each id that stood for A gets a REPOINT to B, so no alias points at A.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from agents.partition_store import PartitionStore
from agents.stored_state import NO_OFFSET, shapes_key
from channels.feedback.decisions import DecisionRecord, refusal_record, trigger_record
from triggers.audiences.record import REASON_ERASED, AudienceChange, change_key
from triggers.engine import Arm, Engine
from triggers.errors import EventRejected, StateDecodeError
from triggers.events import ERASE, Event, Trigger
from triggers.explain import fired_why
from triggers.host import IDENTITY_TYPES, MERGE, ClockPolicy, EngineHost, InputRules
from triggers.merge import ADMIN_MERGE, REASON_CHAIN, REASON_CYCLE
from triggers.reshape import decode_shapes, encode_shapes, reset_store, shape_resets, shapes
from triggers.scenes import Limits, Scene
from triggers.state import UserState

log = logging.getLogger("agents.engine_host")

# On a record forwarded by an identified anonymous id's partition (a merge, a
# re-addressed event): its position there, so a resend is not applied twice.
ORIGIN = "anonymous_position"
# A forwarded record that landed on an id that is itself an alias goes back
# to the partition it came from, which resolves the alias and forwards it
# itself: at most MAX_RETURNS times (HOPS counts them), then dead-lettered.
REPOINT = "repoint"
HOPS = "identity_hops"
MAX_RETURNS = 2
# The ids a returned record found standing for another id, in order: a
# REPOINT whose resolved id is one of them closes a cycle that racing
# identify statements made across partitions (A -> K, K -> B, B -> A),
# which re-pointing alone only rotates, refusing every record of the three.
PASSED = "identity_passed"


class Pending:
    """Work of one partition taken but not yet durable: the messages to ack,
    the trigger sends not yet acknowledged by Kafka and their triggers.

    The agent writes the staged states and acks the messages only once every
    send is acknowledged, so neither a state nor a committed offset can get
    ahead of the triggers it implies; meanwhile it keeps taking messages.
    """

    __slots__ = ("events", "failed", "futures", "messages", "since_ms", "triggers")

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.futures: deque[Any] = deque()
        self.triggers: list[Trigger] = []
        self.since_ms: int | None = None
        self.events = 0  # events the messages held (a record may carry many)
        # A send Kafka refused: the batch must never settle (its states and
        # acks would record a trigger nobody received); it is redone from
        # the committed offset by the next worker to own the partition.
        self.failed: BaseException | None = None

    def add(self, message: Any, now_ms: int, events: int = 1) -> None:
        if self.since_ms is None:
            self.since_ms = now_ms
        self.messages.append(message)
        self.events += events

    def acked(self) -> bool:
        """True when every send is acknowledged; raises a send's error, and
        keeps raising it: a failed batch never settles."""
        if self.failed is not None:
            raise self.failed
        futures = self.futures
        while futures and futures[0].done():
            exc = futures.popleft().exception()
            if exc is not None:
                self.failed = exc
                raise exc
        return not futures

    def take(self) -> tuple[list[Any], list[Trigger]]:
        messages, triggers = self.messages, self.triggers
        self.messages, self.triggers = [], []
        self.futures.clear()
        self.since_ms = None
        self.events = 0
        return messages, triggers

    def __len__(self) -> int:
        return len(self.messages)


class PartitionHost:
    """One events partition's adapter over :class:`triggers.host.EngineHost`:
    the host decodes (input rules of the config), runs the engine under the
    worker's clock policy and counts; this adds the Kafka side: the offset
    guard against redelivered events, the staged store, the batch of work
    not yet durable and the scene shapes kept beside the states."""

    def __init__(self, partition: int, host: EngineHost, store: PartitionStore) -> None:
        if host.engine.store is not store:
            raise ValueError("the host's engine must keep its state in this partition's store")
        self.partition = partition
        self.host = host
        self.store = store
        self.last_offset = NO_OFFSET  # newest events offset processed here
        self.tick_sent_ms: int | None = None  # a tick is on its way (sweep)
        self.pending = Pending()
        self.revoked = False  # set when the partition left us: never write again
        self.reshaped = 0  # users whose recovered state the config's shapes changed
        # (key user id, events-topic value) the agent sends on: identity merges
        # and the re-addressed events of identified anonymous ids.
        self.outbox: list[tuple[str, bytes]] = []
        # Every audience of the config (journey ones too: `scenetrigger journeys`
        # writes those keys): an erasure deletes each audience|user key.
        self.audience_names: tuple[str, ...] = ()
        self.tombstones: list[bytes] = []  # keys to delete on PREFIX.audiences, in order
        host.aliases = store.aliases  # the host applies them, the store persists them
        host.merged = store.merged  # the known users of this partition (never re-pointed)
        self._scenes: dict[str, Scene] | None = None  # by name, for decision records

    @classmethod
    def build(cls, partition: int, store: PartitionStore, scenes: Sequence[Scene],
              limits: Limits, rules: InputRules, clock: ClockPolicy) -> PartitionHost:
        """The partition's host; profiles on: every trigger record carries the
        user's profile for delivery."""
        host = EngineHost(scenes, limits, rules, store=store, track_profile=True, clock=clock)
        return cls(partition, host, store)

    @property
    def engine(self) -> Engine:
        return self.host.engine

    @property
    def event_clock(self) -> bool:
        return self.host.event_clock

    @property
    def idle(self) -> bool:
        """Nothing staged and nothing waiting for acks."""
        return not self.pending and not self.store.dirty

    def is_timer(self, scene: str) -> bool:
        return self.host.is_timer(scene)

    def rebuild(self) -> int:
        """Rebuild the timer heap (and the event clock) from the stored states;
        returns how many timers are armed."""
        clock: int | None = None
        dues: list[tuple[int, str]] = []  # (audience re-evaluation time, user)

        def users() -> Iterator[tuple[str, UserState]]:
            nonlocal clock
            for user_id, state in self.store.load():
                if state.max_ts is not None and (clock is None or state.max_ts > clock):
                    clock = state.max_ts
                if state.audience is not None and state.audience.due is not None:
                    dues.append((state.audience.due, user_id))
                yield user_id, state

        armed = self.engine.rebuild_timers(users())
        if self.host.audiences is not None:
            self.host.audiences.rearm(dues)
        if self.event_clock and clock is not None and clock > self.engine.clock:
            # The partition clock is the largest ts taken; rejected events never
            # reach state, so it is the largest max_ts. No advance(): that would
            # fire timers outside stream iteration; the next event or tick does.
            self.engine.clock = clock
        return self._reshape_recovered(armed)

    def _reshape_recovered(self, armed: int) -> int:
        """Recovered state written under other scene shapes (a restart with a
        changed config): drop what a hot reload to this config would have
        dropped (staged, written at the next settle), then the new shapes.
        State without stored shapes (written before they were kept) is kept."""
        key = shapes_key(self.partition)
        current = shapes(self.engine.scenes)
        encoded = encode_shapes(current)
        stored = self.store.meta.get(key)
        if stored == encoded:
            return armed
        if stored is not None:
            try:
                plan = shape_resets(decode_shapes(stored), current)
            except StateDecodeError as exc:  # e.g. written by a newer version: keep the state
                log.warning("stored scene shapes unreadable, state kept as is",
                            extra={"partition": self.partition, "error": str(exc)})
                plan = {}
            if plan:
                self.reshaped = reset_store(self.store, plan)
                armed = self.engine.rebuild_timers()  # without the timers just dropped
                log.info("recovered state reshaped for the config's scenes", extra={
                    "partition": self.partition, "scenes": sorted(plan),
                    "users": self.reshaped})
        self.store.stage_meta(key, encoded)
        return armed

    def decode_record(self, value: bytes, now_ms: int | None = None) -> list[Event | EventRejected]:
        """An events-topic record's events (one, or a batch), each decoded or
        rejected alone (:meth:`EngineHost.decode_record`; ``now_ms``, the
        worker's wall clock: event time too far ahead of it is ``future_ts``)."""
        return self.host.decode_record(value, now_ms)

    def on_event(self, event: Event, at: int, now_ms: int) -> list[Trigger] | None:
        """Apply the event at position ``at`` (:func:`agents.stored_state.position`); None when the
        user's state already holds it (redelivered after a restart)."""
        store = self.store
        if at <= store.applied_offset(event.user_id):
            return None
        if event.type == ERASE:
            # The clock moves first, as for every record (replay's too): what
            # was due before the erasure fires.
            fired = self.host.advance(self._clock(event, now_ms))
            if self.host.audiences is not None:  # the user leaves every audience
                self.host.audiences.leave_all(event.user_id, store.get(event.user_id),
                                              self.host.clock, REASON_ERASED)
            # After those exits: compaction then keeps nothing of the user.
            self.tombstones.extend(change_key(name, event.user_id)
                                   for name in self.audience_names)
            # The anonymous ids merged into the user were the user too: erase them
            # on their own partitions (their alias and anything left there).
            for anonymous in store.forget(event.user_id):
                self.outbox.append((anonymous, orjson.dumps(
                    {"user_id": anonymous, "ts": event.ts, "type": ERASE})))
            return fired
        if event.type in IDENTITY_TYPES:  # before the alias: a shared device's next login
            return self._identify(event, at, now_ms)
        if event.type == REPOINT:
            return self._repoint(event, at, now_ms)
        fields = event.fields
        origin, source = fields.get(ORIGIN), fields.get("anonymous_id")
        forwarded = type(origin) is int and type(source) is str
        if store.aliases:
            alias = store.aliases.get(event.user_id)
            if alias is not None:
                if forwarded:  # never forwarded onward: that is how merges looped
                    return self._return(event, alias, source)  # type: ignore[arg-type]
                resolved = self.host.resolve(event)  # an identified anonymous id's own event
                self.outbox.append((resolved.user_id, orjson.dumps(
                    {**resolved.fields, ORIGIN: at})))
                return []
        if forwarded and origin <= store.origin_applied(event.user_id, source):  # type: ignore[operator,arg-type]
            return None  # sent again by the anonymous id's partition after a crash there
        if event.type == MERGE:
            fired = self._merge(event, at, now_ms)
        else:
            fired = self.host.take(event, now_ms)
            store.mark_applied(event.user_id, at)
        if forwarded or (event.type == MERGE and type(source) is str and source):
            store.note_merged(event.user_id, source,  # type: ignore[arg-type]
                              origin if forwarded else NO_OFFSET)  # type: ignore[arg-type]
        return fired

    def _clock(self, event: Event, now_ms: int) -> int:
        return event.ts if self.event_clock else now_ms

    def _identify(self, event: Event, at: int, now_ms: int) -> list[Trigger]:
        """The anonymous half (:meth:`EngineHost.detach`) here, once the host's
        rule allows it (else :class:`EventRejected`); A's state (or none) goes
        to K's partition as a :data:`MERGE` event for the known half, which
        also makes K a known user there. The clock moves to the event first,
        as :meth:`EngineHost.identify` does."""
        anonymous = event.user_id
        known = self.host.identity_target(event)
        fired = self.host.advance(self._clock(event, now_ms))
        # Before detach: the store's delete forgets the id's merged list too.
        moved = self.store.take_merged(anonymous) if event.type == ADMIN_MERGE else []
        state = self.host.detach(anonymous, known)
        self.outbox.append((known, orjson.dumps({
            "user_id": known, "ts": event.ts, "type": MERGE, "anonymous_id": anonymous,
            ORIGIN: at,
            "state": None if state is None else orjson.loads(state.encode())})))
        self.store.alias(anonymous, known)  # persisted at the next flush
        for other in moved:  # an admin merge: what still stands for A stands for K (no chain)
            self.outbox.append((other, orjson.dumps({
                "user_id": other, "ts": event.ts, "type": REPOINT, "via": anonymous,
                "known_id": known, HOPS: 0, "record": None})))
        return fired

    def _return(self, event: Event, alias: str, source: str) -> list[Trigger]:
        """A record ``source``'s partition forwarded here, to an id that stands
        for ``alias`` (an identify the source's partition could not resolve:
        the alias lives here). It goes back to ``source``'s partition with the
        alias, never onward (``alias`` may be ``source`` itself: a cycle, which
        the source's partition undoes); a record returned too often is
        refused (:class:`EventRejected`)."""
        fields = event.fields
        hops = fields.get(HOPS, 0)
        if type(hops) is not int or hops >= MAX_RETURNS:
            raise EventRejected(REASON_CHAIN, f"{event.user_id!r} stands for {alias!r}: a record "
                                f"from {source!r} returned {hops} times already")
        record = {k: v for k, v in fields.items() if k not in (ORIGIN, HOPS, PASSED)}
        self.outbox.append((source, orjson.dumps({
            "user_id": source, "ts": event.ts, "type": REPOINT, "via": event.user_id,
            "known_id": alias, HOPS: hops + 1, PASSED: [*_passed(fields), event.user_id],
            "record": record})))
        return []

    def _repoint(self, event: Event, at: int, now_ms: int) -> list[Trigger]:
        """A record of this anonymous id came back (:meth:`_return`): the id it
        stood for stands for ``known_id``. Re-point the alias (the host's
        rule: resolved through the aliases; a cycle restores the id's state
        and is refused), then forward the record to the resolved id."""
        fields = event.fields
        anonymous, via, target = event.user_id, fields.get("via"), fields.get("known_id")
        record, hops = fields.get("record"), fields.get(HOPS)
        store = self.store
        current = store.aliases.get(anonymous)
        if record is None:  # from an admin merge of ``via``: no record came back
            if current == via and isinstance(target, str) and target != anonymous:
                store.alias(anonymous, target)
                self.outbox.append((target, orjson.dumps({
                    "user_id": target, "ts": event.ts, "type": MERGE,
                    "anonymous_id": anonymous, ORIGIN: at, "state": None})))
            return []
        if (current is None and isinstance(record, dict) and record.get("type") != MERGE
                and record.get("anonymous_id") == anonymous):
            # The id stands for itself again (a cycle undone meanwhile): its own event.
            own = {k: v for k, v in record.items() if k != "anonymous_id"}
            fired = self.host.take(Event(anonymous, event.ts, str(own.get("type")),
                                         {**own, "user_id": anonymous}), now_ms)
            store.mark_applied(anonymous, at)
            return fired
        if not (isinstance(record, dict) and isinstance(target, str) and type(hops) is int
                and current is not None):
            raise EventRejected(REASON_CHAIN, f"{anonymous!r} stands for no one now: a "
                                "returned record cannot be forwarded")
        passed = _passed(fields)
        if current == via:
            if target == anonymous or target in passed:  # a cycle: undo this side
                store.unalias(anonymous)
                state = record.get("state") if record.get("type") == MERGE else None
                if state is not None:
                    self.host.absorb(anonymous, UserState.decode(orjson.dumps(state)))
                raise EventRejected(REASON_CYCLE, f"{via!r} stands for {target!r}, which the "
                                    f"record of {anonymous!r} passed: {anonymous!r} keeps its "
                                    "own state")
            store.alias(anonymous, target)
            current = target
        self.outbox.append((current, orjson.dumps(
            {**record, "user_id": current, ORIGIN: at, HOPS: hops, PASSED: passed})))
        return []

    def _merge(self, event: Event, at: int, now_ms: int) -> list[Trigger]:
        """Fold an identified anonymous id's state (if it had one) into this
        (known) user's (:meth:`EngineHost.absorb`: the armed timers come along)."""
        fired = self.host.advance(self._clock(event, now_ms))
        raw = event.fields.get("state")
        store = self.store
        if raw is not None:
            try:
                anonymous = UserState.decode(orjson.dumps(raw))
            except StateDecodeError:
                log.warning("merge event with an unreadable state ignored",
                            extra={"user_id": event.user_id})
                return fired
            self.host.absorb(event.user_id, anonymous)
        store.mark_applied(event.user_id, at)
        return fired

    @property
    def refused(self) -> bool:
        """The engine holds user-filter refusals not yet taken."""
        return self.host.engine.has_refusals

    def decision_records(self, fired: Sequence[Trigger]) -> list[DecisionRecord]:
        """The decision log's records of ``fired`` (each with its scene's rule
        and figures, as explain prints them, read off the state the engine
        just wrote) and of the user-filter refusals since the last call."""
        scenes = self._scenes
        if scenes is None:
            scenes = self._scenes = {scene.name: scene for scene in self.engine.scenes}
            # an experiment's candidate scenes, under a name no scene can carry
            scenes.update({f"\x00{s.name}": s for s in self.engine.arm_scenes})
        out = []
        for trig in fired:
            arm = "\x00" if self.engine.in_arm(trig.user_id) else ""
            scene = scenes.get(arm + trig.scene)
            if scene is not None:
                why = fired_why(scene, trig, self.store.get(trig.user_id))
                out.append(trigger_record(trig, scene.kind, why))
        out += [refusal_record(r) for r in self.host.take_refusals()]
        return out

    def audience_changes(self) -> list[AudienceChange]:
        """The audience changes since the last call (none without audiences)."""
        audiences = self.host.audiences
        return audiences.take() if audiences is not None and audiences.pending else []

    def audience_tombstones(self) -> list[bytes]:
        """The audience keys erasures deleted since the last call, to send
        after :meth:`audience_changes`."""
        out, self.tombstones = self.tombstones, []
        return out

    def on_tick(self, now_ms: int) -> list[Trigger]:
        self.tick_sent_ms = None
        return self.host.tick(now_ms)

    def due(self, now_ms: int) -> int | None:
        """The deadline of a timer due now (by this host's clock), else None."""
        return self.host.due(now_ms)

    def reconfigure(self, scenes: Sequence[Scene], limits: Limits,
                    rules: InputRules | None = None, arm: Arm | None = None) -> None:
        """Hot reload: new scenes, user state and timers kept by scene name
        unless a scene's new shape invalidates them; the new shapes are
        written after the reshaped states. ``arm``: a config experiment's
        candidate scenes for its users (the stored shapes stay the base's)."""
        self.host.reconfigure(scenes, limits, rules, arm)
        self._scenes = None
        self.store.stage_meta(shapes_key(self.partition),
                              encode_shapes(shapes(self.engine.scenes)))


def _passed(fields: Mapping[str, Any]) -> list[str]:
    """The ids a returned record passed (:data:`PASSED`); none when absent or
    not a list of ids (a record written before the field existed)."""
    passed = fields.get(PASSED)
    if isinstance(passed, list) and all(type(p) is str for p in passed):
        return passed
    return []
