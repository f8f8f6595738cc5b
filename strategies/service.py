"""The I/O host of the journey engine for live workers.

:class:`JourneyService` wraps a :class:`JourneyEngine` with persistence and
side effects: journey state in a Redis hash (loaded at start, written after
every step, so positions survive a restart), tags and lead scores in a
:class:`TagStore`, messages handed to an async ``send`` callable. Its
``on_trigger(trigger, fired_at_ms)`` has the signature of the Faust worker's
trigger hook (``agents.app.TriggerHook``), so it can be passed to
``create_app(..., on_trigger=service.on_trigger)``; :mod:`strategies.bridge`
instead feeds it from the triggers topic. The clock is the wall clock
(``clock``), passed explicitly to the engine.

Every Redis read and write goes through a :class:`channels.infra_retry.Waiter`:
a Redis that refuses writes or cannot be reached is waited out with
back-off (counted in ``scenetrigger_infra_errors_total{component="journeys"}``)
inside the step, so the process stays up, the step is finished once Redis
takes it, and the bridge commits no offset before that.

An erased user's triggers are ignored: triggers and events are separate
topics, so a trigger from before the erasure may be read after the erase
event (which dropped the user's journey state and churn watch) and would
build them again. Before acting on a trigger (and on the profile it carries)
the service reads the user's erasure receipt, the check the console and
explain make (:func:`channels.erasure_receipts.erased_at`), and skips a
trigger from up to the erasure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from channels.erasure_receipts import erased_at
from channels.feedback.decisions import DecisionLog
from channels.infra_retry import InfraMetrics, Waiter
from config.clock import wall_ms
from config.experiment import RunningExperiment
from config.models import AppConfig
from strategies.actions import (
    Action,
    AudienceAction,
    HandoffAction,
    ScoreAction,
    SendAction,
    TagAction,
    UserContext,
)
from strategies.churn_watch import ChurnWatch
from strategies.decisions import journey_record
from strategies.journeys import JourneyEngine
from strategies.metrics import StrategyMetrics
from strategies.model import Registry
from strategies.scoring import LeadScorer
from strategies.state import BytesJourneyStore
from strategies.store import TagStore
from triggers.audiences.record import AudienceChange
from triggers.churn import CHURN_RISK_HIGH
from triggers.errors import ConfigError
from triggers.events import ERASE, Event, Trigger
from triggers.profile import Profile

log = logging.getLogger(__name__)

Sender = Callable[[SendAction | HandoffAction], Awaitable[None]]
T = TypeVar("T")


AudienceSender = Callable[[AudienceChange], Awaitable[None]]


class RedisJourneyMap:
    """A dict of user -> journey state bytes, loaded from one Redis hash and
    written back (only what changed) on ``flush``."""

    def __init__(self, client: Any, key: str) -> None:
        self._redis = client
        self._key = key
        self._data: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()  # erased since the last flush

    async def load(self) -> int:
        raw = await self._redis.hgetall(self._key)
        self._data = {(k.decode() if isinstance(k, bytes) else str(k)):
                      (v if isinstance(v, bytes) else str(v).encode()) for k, v in raw.items()}
        self._dirty.clear()
        return len(self._data)

    def get(self, user_id: str) -> bytes | None:
        return self._data.get(user_id)

    def __setitem__(self, user_id: str, value: bytes) -> None:
        if self._data.get(user_id) != value:
            self._data[user_id] = value
            self._dirty.add(user_id)
            self._deleted.discard(user_id)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._data

    def __delitem__(self, user_id: str) -> None:
        del self._data[user_id]
        self._dirty.discard(user_id)
        self._deleted.add(user_id)

    def items(self) -> Iterator[tuple[str, bytes]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    async def flush(self) -> None:
        if self._deleted:
            deleted = list(self._deleted)
            await self._redis.hdel(self._key, *deleted)
            self._deleted.difference_update(deleted)
        if not self._dirty:
            return
        mapping = {user: self._data[user] for user in self._dirty}
        await self._redis.hset(self._key, mapping=mapping)
        self._dirty.difference_update(mapping)  # after the write: a refused one is tried again


def journeys_key(prefix: str) -> str:
    """The hash of every user's journey state (a field per user id)."""
    return f"{prefix}journeys"


class JourneyService:
    def __init__(self, config: AppConfig, client: Any, tags: TagStore, send: Sender,
                 prefix: str = "scenetrigger:", clock: Callable[[], int] = wall_ms,
                 metrics: StrategyMetrics | None = None,
                 decisions: DecisionLog | None = None,
                 audiences: AudienceSender | None = None) -> None:
        section = config.strategies
        self.registry = Registry(section.all_journeys(),
                                 scenes=frozenset(s.name for s in config.scene_list()))
        self.state = RedisJourneyMap(client, journeys_key(prefix))
        self.engine = JourneyEngine(self.registry, BytesJourneyStore(self.state),
                                    section.control, config.channel_types())
        self.scorer = LeadScorer(section.scoring)
        self.tags = tags
        self.send = send
        self._redis_client = client
        self._receipts_prefix = config.delivery.redis_prefix  # where Eraser keeps receipts
        self.clock = clock
        self._lock = asyncio.Lock()  # one engine step at a time (hook, feedback, ticker)
        self.actions = 0
        self.metrics = metrics if metrics is not None else StrategyMetrics.create()
        self.decisions = decisions  # each step as a decision-log record when set
        self.audiences = audiences  # audience steps' changes (PREFIX.audiences) when set
        self.waiter = Waiter("journeys", InfraMetrics.on(self.metrics.registry))
        # Churn tags as the wall clock moves, from the profiles trigger records carry.
        self.churn = ChurnWatch(section.tags)

    def reconfigure(self, config: AppConfig,
                    experiment: RunningExperiment | None = None) -> dict[str, int]:
        """Hot reload: install the new strategies (changed ones get a new
        version; users inside keep theirs), and a config experiment's
        candidate strategies for its users. A bad set raises ConfigError and
        the running versions stay."""
        models = config.strategies.all_journeys()
        old_scenes = self.registry.scenes
        self.registry.scenes = frozenset(s.name for s in config.scene_list())
        if experiment is not None:  # its scenes may add entries: known to both arms
            self.registry.scenes |= {s.name for s in experiment.candidate.scene_list()}
        try:
            applied = self.registry.apply(models)
            if experiment is None:
                self.registry.apply_arm(None)
            else:
                self.registry.apply_arm(experiment.candidate.strategies.all_journeys(),
                                        experiment.takes)
            return applied
        except ConfigError:
            self.registry.scenes = old_scenes
            raise

    async def start(self) -> int:
        """Load positions from Redis and re-arm their deadlines."""
        await self._redis("loading journey positions", self.state.load)
        return self.engine.rebuild_timers()

    async def erased(self, user_id: str, ts: int) -> bool:
        """The user was erased at or after ``ts`` (their receipt's time): a
        record of theirs from then must not bring journey state back."""
        erased = await self._redis("reading the erasure receipt", lambda: erased_at(
            self._redis_client, self._receipts_prefix, [user_id]))
        return ts <= erased.get(user_id, -1)

    async def on_trigger(self, trigger: Trigger, fired_at_ms: int = 0) -> None:
        if await self.erased(trigger.user_id, trigger.ts):
            return
        async with self._lock:
            ctx = UserContext(await self._redis("reading tags",
                                                lambda: self.tags.tags(trigger.user_id)))
            await self._apply(self.engine.on_trigger(trigger, ctx))

    async def on_feedback(self, event: Event) -> None:
        """A feedback or clickstream event: branches, and lead score points."""
        async with self._lock:
            actions: list[Action] = list(self.engine.on_event(event))
            if event.type in self.scorer.model.points:
                await self._load_score(event.user_id)
                actions += self.scorer.on_event(event)
                await self._save_score(event.user_id)
            await self._apply(actions)

    async def on_clickstream(self, event: Event) -> None:
        """A clickstream event (the events topic): exits on a goal it meets
        and branches waiting for it (``purchased``), as the report runs them;
        no lead-score points (those stay on the feedback topic's events)."""
        async with self._lock:
            if event.type == ERASE:  # the churn ticker would write their tags again
                self.churn.forget(event.user_id)
            await self._apply(self.engine.on_event(event))

    async def on_profile(self, user_id: str, profile: Profile, at_ms: int | None = None) -> None:
        """A user's profile as a trigger record carries it: their churn tags
        now, and when they change next (the ticker sets them then). ``at_ms``:
        the trigger's time (skipped when the user was erased since)."""
        if at_ms is not None and await self.erased(user_id, at_ms):
            return
        async with self._lock:
            now = self.clock()
            await self._churn(user_id, self.churn.observe(user_id, profile, now), now)

    async def tick(self) -> None:
        async with self._lock:
            now = self.clock()
            await self._apply(self.engine.advance(now))
            for user_id, tags in self.churn.due(now):
                await self._churn(user_id, tags, now)

    async def _churn(self, user_id: str, tags: frozenset[str], now: int) -> None:
        """Churn tags into the tag store (``churn_risk_high`` derived, ``churned``
        sticky: only a tag step removes it); a new one lets tag entries enrol."""
        current = await self._redis("reading tags", lambda: self.tags.tags(user_id))
        add = tags - current
        drop = (current & {CHURN_RISK_HIGH}) - tags
        if drop:
            await self._redis("writing tags", lambda: self.tags.remove(user_id, drop))
        if add:
            await self._redis("writing tags", lambda: self.tags.add(user_id, add))
            ctx = UserContext((current | tags) - drop)
            await self._apply(self.engine.on_user(user_id, ctx, now))

    async def run_ticker(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the ticker must outlive one bad step
                log.exception("journey tick failed")
            await asyncio.sleep(interval_s)

    async def _redis(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """``op()``, waiting out a Redis that refuses or cannot be reached."""
        return await self.waiter.run(op, f"journeys waits for Redis ({what})")

    def _tag_change(self, action: TagAction) -> Callable[[], Awaitable[None]]:
        change = self.tags.add if action.add else self.tags.remove
        return lambda: change(action.user_id, [action.tag])

    async def _load_score(self, user_id: str) -> None:
        stored = await self._redis("reading a score", lambda: self.tags.score(user_id))
        if stored is not None:
            self.scorer.store.put(user_id, stored)
        else:  # erased (or reset): the cached score must not be written back
            self.scorer.store.delete(user_id)

    async def _save_score(self, user_id: str) -> None:
        score = self.scorer.store.get(user_id)
        if score is not None:
            await self._redis("writing a score", lambda: self.tags.put_score(user_id, score))

    async def _apply(self, actions: list[Action]) -> None:
        """Side effects, then the new positions (at-least-once: a crash in
        between repeats the step, and message ids let channels deduplicate)."""
        self.metrics.observe(actions)
        for action in actions:
            self.actions += 1
            self._log(action)
            if isinstance(action, SendAction | HandoffAction):
                await self.send(action)
            elif isinstance(action, TagAction):
                await self._redis("writing tags", self._tag_change(action))
            elif isinstance(action, AudienceAction) and self.audiences is not None:
                try:
                    await self.audiences(action.change())
                except BaseException:  # not on the topic: the next step must write it
                    self.engine.membership_unknown(action.user_id, action.audience)
                    raise
            elif isinstance(action, ScoreAction):
                await self._load_score(action.user_id)
                handoffs = self.scorer.adjust(action.user_id, action.delta, action.ts)
                self.metrics.observe(list(handoffs))
                for handoff in handoffs:
                    self._log(handoff)
                    await self.send(handoff)
                await self._save_score(action.user_id)
        await self._redis("writing journey positions", self.state.flush)
        flush = getattr(self.decisions, "flush", None)
        if flush is not None:  # the Kafka log: acknowledged with the step
            await flush()

    def _log(self, action: Action) -> None:
        if self.decisions is not None:
            self.decisions.write(journey_record(action))
