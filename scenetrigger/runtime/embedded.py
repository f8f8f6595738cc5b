"""The embedded runtime: the scene engine in one asyncio task, no Kafka, no Redis.

An adapter over :class:`triggers.host.EngineHost` (event clock): a source
of event dicts (the persona clickstream, or any time-ordered iterable) is
decoded by the host (the config's identifier limits included) and fed to its
engine as the simulated clock reaches each event's ``ts``; after every tick
the clock is advanced to the simulated now, so an absence timer fires with
no new traffic from its user (SEMANTICS.md, "In a live worker the clock is
the wall clock").

With a :class:`~scenetrigger.runtime.catalog_join.CatalogJoin` the catalog
scenes run too, through the join replay's ``--catalog-changes`` uses: its
records are applied in time order among the events (a record at ``ts``
after every event at or before ``ts``), their fan-out events taken like any
event, and every event feeds the interest (docs/catalog.md).

Each trigger is turned into content previews (what would be sent) and pushed
to subscribers: the console printer, the web page's state, metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from agents.metrics import RESULT_ACCEPTED, RESULT_REJECTED, events_counter
from scenetrigger.runtime.catalog_join import CatalogJoin
from triggers.audiences.record import AudienceChange
from triggers.catalog import CatalogRecord
from triggers.engine import Engine
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import Trigger
from triggers.host import EngineHost
from triggers.profile import Profile
from triggers.state import UserState

log = logging.getLogger("scenetrigger.runtime.embedded")

UNKNOWN_PERSONA = "unknown"
_BATCH = 500  # events handled between two yields to the event loop


class Clock(Protocol):
    """Real (monotonic) seconds and a way to wait: tests pass a fake one."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class ContentPreview:
    """One message that would be sent (dry run), or why it is held back.

    ``status``: ``send`` (would be sent now), ``deferred`` (quiet hours: sent
    at ``due_ms``), ``suppressed`` (caps, back-off, ...; ``reason`` says which)
    or ``failed``. ``style``/``segment`` are what content selection saw.
    """

    channel: str
    subject: str
    text: str
    variant: str | None = None
    status: str = "send"
    reason: str | None = None
    style: str | None = None
    segment: str | None = None
    due_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "subject": self.subject, "text": self.text,
                "variant": self.variant, "status": self.status, "reason": self.reason,
                "style": self.style, "segment": self.segment, "due_ms": self.due_ms}


@dataclass(frozen=True, slots=True)
class TriggerContext:
    """What content selection may know about the user at firing time."""

    persona: str
    state: UserState | None
    sim_ms: int

    @property
    def profile(self) -> Profile | None:
        return self.state.profile if self.state is not None else None


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """A fired trigger as the demo shows it."""

    trigger: Trigger
    persona: str
    fired_ms: int  # simulated time when the runtime emitted it (>= trigger.ts)
    via: str  # "event" or "timer" (fired by the clock); "release": a held-back message sent
    content: tuple[ContentPreview, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.trigger.to_dict(),
            "persona": self.persona,
            "fired_ms": self.fired_ms,
            "via": self.via,
            "content": [c.to_dict() for c in self.content],
        }


class ContentSource(Protocol):
    """Turns a trigger into what would be sent (never sends: dry run)."""

    name: str

    async def preview(self, trigger: Trigger, context: TriggerContext) -> tuple[
        ContentPreview, ...]: ...

    async def release(self, now_ms: int, states: StateLookup) -> list[
            tuple[Trigger, ContentPreview]]:
        """Messages held back earlier (quiet hours) that are due by ``now_ms``."""
        ...

    async def close(self) -> None: ...


Subscriber = Callable[[TriggerRecord], Awaitable[None] | None]
# Called with the simulated now at the end of every tick (awaited if it returns an awaitable).
Ticker = Callable[[int], Awaitable[None] | None]
StateLookup = Callable[[str], UserState | None]


class DemoMetrics:
    """Prometheus metrics in a registry of their own (one per runtime)."""

    def __init__(self, scenes: Iterable[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.events = events_counter(reg)
        self.triggers = PromCounter("scenetrigger_triggers", "Triggers fired per scene",
                                    ["scene"], registry=reg)
        self.messages = PromCounter("scenetrigger_demo_messages",
                                    "Dry-run messages per channel and status",
                                    ["channel", "status"], registry=reg)
        self.users = Gauge("scenetrigger_demo_users", "Users the engine holds state for",
                           registry=reg)
        self.pending = Gauge("scenetrigger_pending_timers", "Absence timers armed",
                             registry=reg)
        self.sim_time = Gauge("scenetrigger_demo_sim_time_seconds",
                              "Simulated clock (Unix seconds)", registry=reg)
        self.events.labels(RESULT_ACCEPTED, "")
        for scene in scenes:
            self.triggers.labels(scene=scene)


@dataclass
class RuntimeStats:
    events: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    triggers: Counter[str] = field(default_factory=Counter)
    messages: int = 0  # would be sent now
    held: Counter[str] = field(default_factory=Counter)  # deferred / suppressed / failed
    started_ms: int = 0  # simulated start
    sim_ms: int = 0
    real_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.real_seconds if self.real_seconds > 0 else 0.0


class EmbeddedRuntime:
    """Feeds ``events`` to ``host`` on an accelerated simulated clock.

    ``speed`` simulated seconds pass per real second; the simulated clock
    starts at ``start_ms``. Events must come in non-decreasing ``ts``.
    An engine alone is hosted with the default input rules.
    """

    def __init__(
        self,
        host: EngineHost | Engine,
        events: Iterable[Mapping[str, Any]],
        *,
        start_ms: int,
        speed: float = 600.0,
        persona_of: Callable[[str], str | None] | None = None,
        content: ContentSource | None = None,
        clock: Clock | None = None,
        tick_seconds: float = 0.05,
        recent: int = 50,
        registry: CollectorRegistry | None = None,
        catalog: CatalogJoin | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.host = host if isinstance(host, EngineHost) else EngineHost.around(host)
        self.engine = engine = self.host.engine
        self.speed = speed
        self.start_ms = start_ms
        self.content = content
        self.catalog = catalog
        self.clock: Clock = clock if clock is not None else RealClock()
        self.tick_seconds = tick_seconds
        self.metrics = DemoMetrics([s.name for s in engine.scenes], registry)
        # The host counts events, rejects and triggers; the stats show them.
        self.stats = RuntimeStats(started_ms=start_ms, sim_ms=start_ms,
                                  rejected=self.host.counts.rejected,
                                  triggers=self.host.counts.triggers)
        self.recent: deque[TriggerRecord] = deque(maxlen=recent)
        # Audience changes (the `audiences:` section's and journeys' audience
        # steps), newest first, and how many of each (docs/ads.md).
        self.audience_recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.audience_counts: Counter[str] = Counter()
        self._events: Iterator[Mapping[str, Any]] = iter(events)
        self._next: Mapping[str, Any] | None = None
        self._exhausted = False
        self._persona_of = persona_of or (lambda _uid: None)
        self._subscribers: list[Subscriber] = []
        self._tickers: list[Ticker] = []
        self._panels: dict[str, Callable[[], Any]] = {}
        self._real_start: float | None = None
        self._stop = asyncio.Event()
        self._changed: set[str] | None = None  # users whose profile events changed

    def track_profiles(self) -> set[str]:
        """From now on every user an event changes (and the known user of an
        identified id) is added to the returned set, which the caller empties
        (:class:`scenetrigger.runtime.live_profiles.ProfileWriter`)."""
        if self._changed is None:
            self._changed = set()
        return self._changed

    # -- wiring -----------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def add_ticker(self, ticker: Ticker) -> None:
        """``ticker(now_ms)`` after every tick: clocks of their own (journeys) follow."""
        self._tickers.append(ticker)

    def add_panel(self, name: str, panel: Callable[[], Any]) -> None:
        """``snapshot()[name] = panel()``: more state for the live page."""
        self._panels[name] = panel

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current tick."""
        self._stop.set()

    def persona(self, user_id: str) -> str:
        return self._persona_of(user_id) or UNKNOWN_PERSONA

    def add_catalog(self, record: CatalogRecord) -> int:
        """A catalog record taking effect at the simulated now (applied at
        the next tick, after the events up to then); its time."""
        if self.catalog is None:
            raise SceneTriggerError("the config has no catalog scene "
                                    "(back_in_stock, price_drop, new_arrival)")
        ts = max(self.sim_now(), self.stats.sim_ms)
        self.catalog.add(record, ts)
        return ts

    def sim_now(self) -> int:
        """The simulated clock: ``start_ms`` plus ``speed`` x real time elapsed."""
        if self._real_start is None:
            return self.start_ms
        elapsed = self.clock.monotonic() - self._real_start
        return self.start_ms + int(elapsed * self.speed * 1000)

    # -- running ----------------------------------------------------------------

    async def run(self, duration_seconds: float | None = None) -> RuntimeStats:
        """Tick until ``duration_seconds`` of real time passed or :meth:`stop`."""
        self._real_start = self.clock.monotonic()
        self.engine.advance(self.start_ms)
        try:
            while not self._stop.is_set():
                elapsed = self.clock.monotonic() - self._real_start
                done = duration_seconds is not None and elapsed >= duration_seconds
                await self.step(self.sim_now())
                if done:
                    break
                await self.clock.sleep(self.tick_seconds)
        finally:
            self.stats.real_seconds = self.clock.monotonic() - self._real_start
        return self.stats

    async def step(self, now_ms: int) -> list[TriggerRecord]:
        """Take every event due by ``now_ms``, then move the engine's clock there."""
        fired: list[TriggerRecord] = []
        host = self.host
        handled = 0
        while True:
            raw = self._peek()
            if raw is None or _ts_of(raw) > now_ms:
                break
            self._next = None
            try:
                event = host.decode_mapping(raw)
            except EventRejected as exc:
                self.metrics.events.labels(RESULT_REJECTED, exc.reason).inc()
                log.warning("event rejected", extra={"reason": exc.reason, "detail": exc.detail})
                continue
            self.metrics.events.labels(RESULT_ACCEPTED, "").inc()
            if self.catalog is not None:
                fired += await self._fan_out(event.ts, now_ms)
                self.catalog.observe(event)
            for trig in host.take(event):
                fired.append(await self._emit(trig, max(now_ms, trig.ts), event.ts))
            if self._changed is not None:
                self._changed.add(event.user_id)
                if host.aliases and event.user_id in host.aliases:
                    self._changed.add(host.aliases[event.user_id])
            self.stats.events = host.counts.taken
            handled += 1
            if handled % _BATCH == 0:
                await asyncio.sleep(0)  # let the web server answer in long bursts
        if self.catalog is not None:  # every later event is after now_ms
            fired += await self._fan_out(now_ms + 1, now_ms)
        for trig in host.advance(now_ms):
            fired.append(await self._emit(trig, now_ms, now_ms))
        if host.audiences is not None:
            for change in host.audiences.take():
                self.note_audience(change)
        if self.content is not None:
            try:
                released = await self.content.release(now_ms, self.engine.store.get)
            except Exception:  # a delivery bug must not stop the demo
                log.exception("releasing held-back messages failed")
                released = []
            for trig, preview in released:
                record = TriggerRecord(trig, self.persona(trig.user_id), now_ms, "release",
                                       (preview,))
                fired.append(await self._publish(record))
        for ticker in self._tickers:
            try:
                result = ticker(now_ms)
                if result is not None:
                    await result
            except Exception:  # a strategy bug must not stop the demo
                log.exception("ticker failed")
        self.stats.sim_ms = max(self.stats.sim_ms, now_ms)
        self.metrics.sim_time.set(self.stats.sim_ms / 1000)
        self.metrics.users.set(len(self.engine.store))
        self.metrics.pending.set(len(self.engine.pending_timers()))
        return fired

    async def close(self) -> None:
        if self.content is not None:
            await self.content.close()

    # -- internals --------------------------------------------------------------

    async def _fan_out(self, before_ms: int, now_ms: int) -> list[TriggerRecord]:
        """Take the fan-out of the catalog records due before ``before_ms``."""
        assert self.catalog is not None
        fired = []
        for _number, event in list(self.catalog.before(before_ms)):
            for trig in self.host.take(event):
                fired.append(await self._emit(trig, max(now_ms, trig.ts), event.ts))
        self.stats.events = self.host.counts.taken
        return fired

    def _peek(self) -> Mapping[str, Any] | None:
        if self._next is None and not self._exhausted:
            self._next = next(self._events, None)
            self._exhausted = self._next is None
        return self._next

    async def _emit(self, trig: Trigger, fired_ms: int, at_ms: int) -> TriggerRecord:
        via = "timer" if self.host.is_timer(trig.scene) else "event"
        persona = self.persona(trig.user_id)
        content: tuple[ContentPreview, ...] = ()
        if self.content is not None:
            context = TriggerContext(persona, self.engine.store.get(trig.user_id), at_ms)
            try:
                content = await self.content.preview(trig, context)
            except Exception:  # a content bug must not stop the demo
                log.exception("content preview failed", extra={"scene": trig.scene})
        self.metrics.triggers.labels(scene=trig.scene).inc()
        return await self._publish(TriggerRecord(trig, persona, fired_ms, via, content))

    async def _publish(self, record: TriggerRecord) -> TriggerRecord:
        for preview in record.content:
            if preview.status == "send":
                self.stats.messages += 1
            else:
                self.stats.held[preview.status] += 1
            self.metrics.messages.labels(channel=preview.channel, status=preview.status).inc()
        self.recent.appendleft(record)
        for subscriber in self._subscribers:
            result = subscriber(record)
            if result is not None:
                await result
        return record

    def snapshot(self) -> dict[str, Any]:
        """The state the live page shows (JSON-ready)."""
        stats = self.stats
        return {
            "sim_ms": stats.sim_ms,
            "started_ms": stats.started_ms,
            "speed": self.speed,
            "events": stats.events,
            "rejected": sum(stats.rejected.values()),
            "events_per_second": round(self._live_rate(), 1),
            "users": len(self.engine.store),
            "pending_timers": len(self.engine.pending_timers()),
            "triggers": dict(stats.triggers),
            "messages": stats.messages,
            "held": dict(stats.held),
            "content_source": self.content.name if self.content is not None else None,
            "recent": [r.to_dict() for r in self.recent],
            **({"audiences": {"changes": dict(self.audience_counts),
                              "recent": list(self.audience_recent)}}
               if self.audience_counts or self.host.audiences is not None else {}),
            **{name: panel() for name, panel in self._panels.items()},
        }

    def note_audience(self, change: AudienceChange) -> None:
        """One audience change for the live page (the tracker's or a journey's)."""
        self.audience_counts[f"{change.op} {change.audience}"] += 1
        self.audience_recent.appendleft(change.to_dict())

    def _live_rate(self) -> float:
        if self._real_start is None:
            return 0.0
        elapsed = self.clock.monotonic() - self._real_start
        return self.stats.events / elapsed if elapsed > 0 else 0.0


def _ts_of(raw: Mapping[str, Any]) -> int:
    """The ts used for pacing; a malformed one is due at once (and then rejected)."""
    ts = raw.get("ts") if isinstance(raw, Mapping) else None
    return ts if type(ts) is int else -(1 << 63)
