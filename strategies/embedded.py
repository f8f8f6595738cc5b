"""Strategies in the embedded runtime (``scenetrigger demo``): a subscriber
that takes each fired trigger, runs the journeys on the runtime's simulated
clock and reports their actions. Wire it with
``runtime.subscribe(JourneySubscriber(config, printer))`` and
``runtime.add_ticker(subscriber.tick)`` so deadlines fire with no new trigger.

With a ``delivery`` (the demo's pipeline, dry run or live) every send step
is a typed order through the delivery policy, like a scene trigger's
message: dedupe by its message id, quiet hours, back-off and caps; only a
delivered one is shown as sent, the others as held (``on_held``), and a
quiet-hours deferral comes back when released (:meth:`JourneySubscriber.released`).

The demo's shoppers are simulated, so nobody opens anything: :class:`SimulatedOpens`
stands in for the shoppers, opening a share of the journey messages per
channel after a short delay (deterministic per seed and message id), so
both branches of the reactivation strategy show; the opens are feedback
events in the one vocabulary (``type: opened``, channels.feedback.events). Each send
is rendered from the content section's ``journeys`` entry for its content
ref (channels.content.select: by the user's style and segment) and handed on with
``variant``, ``subject`` and ``text`` filled. ``scaled`` shortens waits for
the demo's clock (2 days in 30 simulated minutes at the default 96).
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.content.catalog import MemoryCatalog
from channels.content.select import ContentSelector
from channels.feedback.events import FeedbackEvent
from channels.pipeline import Outcome
from config.models import AppConfig
from config.strategy_models import StrategyModel
from strategies.actions import (
    Action,
    AudienceAction,
    EnrolAction,
    ExitAction,
    SendAction,
    SuppressedAction,
    TagAction,
    UserContext,
    action_to_dict,
)
from strategies.churn_watch import ChurnWatch
from strategies.journeys import JourneyEngine
from strategies.metrics import StrategyMetrics
from strategies.model import Registry
from triggers.audiences.record import AudienceChange
from triggers.churn import CHURN_RISK_HIGH
from triggers.events import Event
from triggers.state import UserState

ActionSink = Callable[[Action], None]
_EXIT_LABELS = {"exit": "exit step", "end": "end of steps"}
FeedbackSink = Callable[[Event], None]
StateLookup = Callable[[str], UserState | None]
HeldSink = Callable[[SendAction, Outcome], None]


class SendDelivery(Protocol):
    """What the subscriber needs of :class:`channels.pipeline.DeliveryPipeline`."""

    async def deliver_send(self, send: SendAction, state: UserState | None,
                           now_ms: int) -> Outcome: ...
DEFAULT_OPEN_SHARE: Mapping[str, float] = {"push": 0.2, "sms": 0.15, "wechat": 0.45,
                                           "email": 0.3}


def scaled(journeys: Mapping[str, StrategyModel], factor: float) -> dict[str, StrategyModel]:
    """The same strategies with every wait, branch window and ``reenter_after``
    divided by ``factor`` (at least 1 ms); ``factor`` 1 changes nothing."""
    if factor <= 0:
        raise ValueError("factor must be > 0")

    def short(ms: int) -> int:
        return max(1, round(ms / factor))

    out: dict[str, StrategyModel] = {}
    for name, model in journeys.items():
        steps = []
        for step in model.steps:
            if step.wait is not None:
                step = step.model_copy(update={"wait": short(step.wait)})
            elif step.branch is not None:
                branch = step.branch.model_copy(update={"within": short(step.branch.within)})
                step = step.model_copy(update={"branch": branch})
            steps.append(step)
        again = None if model.reenter_after is None else short(model.reenter_after)
        out[name] = model.model_copy(update={"steps": steps, "reenter_after": again})
    return out


@dataclass(frozen=True, slots=True)
class SimulatedOpens:
    """Decides whether (and how long after sending) a journey message is
    opened: ``share`` per channel, a delay drawn in ``[min_delay_ms,
    max_delay_ms]``. Pure function of (seed, message id)."""

    seed: int = 7
    share: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_OPEN_SHARE))
    min_delay_ms: int = 60_000
    max_delay_ms: int = 20 * 60_000

    def open_delay(self, send: SendAction) -> int | None:
        rng = random.Random(f"{self.seed}|{send.message_id}")  # noqa: S311 - a simulation
        if rng.random() >= self.share.get(send.channel, 0.0):
            return None
        return rng.randint(self.min_delay_ms, self.max_delay_ms)


class JourneySubscriber:
    """Runs the config's strategies (or ``journeys``) on the runtime's clock."""

    def __init__(self, config: AppConfig, sink: ActionSink,
                 metrics: StrategyMetrics | None = None, *,
                 journeys: Mapping[str, StrategyModel] | None = None,
                 opens: SimulatedOpens | None = None, on_feedback: FeedbackSink | None = None,
                 states: StateLookup | None = None, recent: int = 50,
                 delivery: SendDelivery | None = None, on_held: HeldSink | None = None,
                 on_audience: Callable[[AudienceChange], None] | None = None) -> None:
        section = config.strategies
        models = journeys if journeys is not None else section.all_journeys()
        self.engine = JourneyEngine(
            Registry(models, scenes=frozenset(s.name for s in config.scene_list())),
            control=section.control, channel_types=config.channel_types())
        self.sink = sink
        # Journey content has no products, so the catalog is never asked.
        self.content = ContentSelector(config.content, MemoryCatalog(),
                                       config.delivery.default_timezone)
        self.states = states
        self.metrics = metrics
        self.opens = opens
        self.on_feedback = on_feedback
        self.delivery = delivery
        self.on_held = on_held
        self.on_audience = on_audience  # audience steps' changes (reason journey)
        self.actions = 0
        # Churn tags as the simulated clock moves (states: the engine's profiles).
        self.churn = ChurnWatch(section.tags)
        self.counts: Counter[str] = Counter()  # enrolled, sent, opened, tag:+x, exit:reason
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self._pending: list[tuple[int, int, Event]] = []  # simulated opens, by time
        self._seq = 0

    async def __call__(self, record: Any) -> None:
        """``record`` is a ``scenetrigger.runtime.embedded.TriggerRecord``."""
        await self.tick(record.fired_ms)
        if record.via != "release":  # a released message is not a new trigger
            user_id, now = record.trigger.user_id, record.fired_ms
            state = self.states(user_id) if self.states is not None else None
            tags = self.churn.observe(user_id, state.profile if state else None, now)
            ctx = UserContext(self._churn_tags(user_id, tags))
            await self._emit(self.engine.on_trigger(record.trigger, ctx), now)

    async def tick(self, now_ms: int) -> None:
        """Deliver the simulated opens due by ``now_ms`` and fire due deadlines."""
        while True:
            if self._pending and self._pending[0][0] <= now_ms:
                _, _, event = heapq.heappop(self._pending)
                self.counts["opened"] += 1
                self._note({"kind": "opened", "user_id": event.user_id, "ts": event.ts,
                            **event.fields})
                if self.on_feedback is not None:
                    self.on_feedback(event)
                await self._emit(self.engine.on_event(event), now_ms)
                continue
            await self._emit(self.engine.advance(now_ms), now_ms)
            if not self._pending or self._pending[0][0] > now_ms:
                break
        for user_id, tags in self.churn.due(now_ms):  # tag entries enrol (winback)
            ctx = UserContext(self._churn_tags(user_id, tags))
            await self._emit(self.engine.on_user(user_id, ctx, now_ms), now_ms)

    def _churn_tags(self, user_id: str, tags: frozenset[str]) -> frozenset[str]:
        """The churn tags into the user's journey tags: ``churn_risk_high`` is
        derived (dropped when the risk falls), ``churned`` sticky (only a tag
        step removes it)."""
        user = self.engine.store.get(user_id)
        if user is not None and CHURN_RISK_HIGH in user.tags and CHURN_RISK_HIGH not in tags:
            user.tags.discard(CHURN_RISK_HIGH)
            self.engine.store.put(user_id, user)
        return tags

    def snapshot(self) -> dict[str, Any]:
        """For the live page: counters and the most recent actions, newest first."""
        return {"counts": dict(sorted(self.counts.items())), "recent": list(self.recent),
                "pending_opens": len(self._pending)}

    def released(self, outcome: Outcome) -> None:
        """A send the policy deferred (quiet hours) and released later."""
        send = outcome.order
        if not isinstance(send, SendAction):
            return
        if outcome.message is not None:  # sent now: shown, and opened, from now on
            send = dataclasses.replace(send, ts=outcome.message.created_ms)
        if outcome.status == "delivered":
            self._sent(send, outcome)
        else:  # released into a cap or the back-off
            self._held(send, outcome)

    async def _emit(self, actions: list[Action], now_ms: int) -> None:
        if self.metrics is not None:
            self.metrics.observe(actions)
        for action in actions:
            self.actions += 1
            if not isinstance(action, SendAction):
                self._count(action)
                self.sink(action)
                if isinstance(action, AudienceAction) and self.on_audience is not None:
                    self.on_audience(action.change())
            elif self.delivery is None:
                self._sent(action, None)
            else:
                state = self.states(action.user_id) if self.states is not None else None
                outcome = await self.delivery.deliver_send(action, state, now_ms)
                if outcome.status == "delivered":
                    self._sent(action, outcome)
                else:
                    self._held(action, outcome)

    def _sent(self, send: SendAction, outcome: Outcome | None) -> None:
        if outcome is not None and outcome.message is not None:
            # As delivered: the pipeline chose the variant and rendered it.
            send = dataclasses.replace(send, variant=outcome.variant,
                                       subject=outcome.message.subject,
                                       text=outcome.message.text)
        else:
            send = self.render(send)
        self._count(send)
        if self.opens is not None:
            self._schedule_open(send)
        self.sink(send)

    def _held(self, send: SendAction, outcome: Outcome) -> None:
        # The reason says which (quiet_hours: deferred; cap_day, backoff...: suppressed).
        self.counts[f"held: {outcome.reason or outcome.status}"] += 1
        send = self.render(send)
        self._note({**action_to_dict(send), "status": outcome.status, "reason": outcome.reason})
        if self.on_held is not None:
            self.on_held(send, outcome)

    def render(self, send: SendAction) -> SendAction:
        """The send with its content ref rendered for this user."""
        state = self.states(send.user_id) if self.states is not None else None
        choice = self.content.choose_ref(send.content_ref, send.user_id, state, send.ts)
        content = choice.render()
        return dataclasses.replace(send, variant=choice.variant, subject=content.subject,
                                   text=content.text)

    def _schedule_open(self, send: SendAction) -> None:
        assert self.opens is not None
        delay = self.opens.open_delay(send)
        if delay is None:
            return
        self._seq += 1
        event = FeedbackEvent("opened", send.user_id, send.ts + delay, send.message_id,
                              send.channel, "", strategy=send.strategy, step=send.step,
                              source="simulated").to_event()
        heapq.heappush(self._pending, (event.ts, self._seq, event))

    def _count(self, action: Action) -> None:
        if isinstance(action, EnrolAction):
            self.counts["enrolled" + (" (control)" if action.control else "")] += 1
        elif isinstance(action, SendAction):
            self.counts["sent"] += 1
        elif isinstance(action, TagAction):
            self.counts[("tag +" if action.add else "tag -") + action.tag] += 1
        elif isinstance(action, AudienceAction):
            self.counts[("audience +" if action.add else "audience -") + action.audience] += 1
        elif isinstance(action, ExitAction):
            self.counts[f"left: {_EXIT_LABELS.get(action.reason, action.reason)}"] += 1
        if not isinstance(action, SuppressedAction):  # in_progress etc.: counted, not listed
            self._note(action_to_dict(action))

    def _note(self, item: dict[str, Any]) -> None:
        self.recent.appendleft(item)
