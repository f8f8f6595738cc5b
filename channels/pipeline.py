"""DeliveryPipeline: trigger + user state -> content -> policy -> channel.

Modes: ``dry-run`` renders and applies the policy (in memory unless given a
store) and hands every message to a log channel; ``live`` sends through the
configured channels (:class:`channels.registry.ChannelSender`). Both return
an :class:`Outcome` per trigger for display, and report delivered / failed
to the feedback sink. ``now_ms`` is always a parameter.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from channels.base import DeliveryResult, Message
from channels.catalog import Catalog, MemoryCatalog
from channels.content import ContentChoice, ContentSelector
from channels.feedback import (
    FeedbackApp,
    FeedbackEvent,
    FeedbackSink,
    MemoryMessageIndex,
    MessageIndex,
    MessageMeta,
    open_pixel_html,
    tracked_link,
)
from channels.policy import (
    DeliveryPolicy,
    DeliveryRequest,
    MemoryPolicyStore,
    PolicyMetrics,
    PolicyStore,
)
from config.models import AppConfig
from config.strategy_models import ControlModel
from strategies.control import in_control
from triggers.events import Trigger
from triggers.state import UserState

Mode = Literal["dry-run", "live"]
CONTROL = "control"  # suppression reason of a scene's control (holdout) user
StateLookup = Callable[[str], UserState | None]


class Sender(Protocol):
    """What the pipeline needs of :class:`channels.registry.ChannelSender`."""

    async def send(self, message: Message, channel: str | None = None, *,
                   dead_letter: bool = True) -> DeliveryResult: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    trigger_id: str
    user_id: str
    scene: str
    status: Literal["delivered", "deferred", "suppressed", "failed"]
    reason: str | None
    channel: str | None
    variant: str
    style: str
    segment: str
    tags: tuple[str, ...] = ()
    message: Message | None = None
    due_ms: int | None = None

    def fields(self) -> dict[str, Any]:
        """Extra output fields (after the four contract fields of a trigger line)."""
        out: dict[str, Any] = {"delivery": self.status, "channel": self.channel,
                               "variant": self.variant, "segment": self.segment,
                               "style": self.style}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.due_ms is not None:
            out["due_ms"] = self.due_ms
        if self.reason == CONTROL:
            out["group"] = CONTROL  # held out: `report` counts it as a control unit
        if self.message is not None:
            out["subject"] = self.message.subject
        return out


def message_id_for(trigger_id: str, channel: str, step: int = 0) -> str:
    """Deterministic: the same trigger, channel and step give the same id."""
    raw = f"{trigger_id}|{channel}|{step}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


class DeliveryPipeline:
    def __init__(self, selector: ContentSelector, policy: DeliveryPolicy, sender: Sender,
                 channels: Collection[str], mode: Mode = "dry-run",
                 dry_run_channel: str = "log", index: MessageIndex | None = None,
                 feedback: FeedbackSink | None = None, tracking_base: str | None = None,
                 tracking_secret: bytes = b"", control: ControlModel | None = None) -> None:
        self.selector = selector
        self.control = control if control is not None else ControlModel()
        self.policy = policy
        self.sender = sender
        self.channels = frozenset(channels)
        self.mode = mode
        self.dry_run_channel = dry_run_channel
        self.index = index if index is not None else MemoryMessageIndex()
        self.feedback = feedback
        self.tracking_base = tracking_base if tracking_secret else None
        self.tracking_secret = tracking_secret
        self.counts: Counter[str] = Counter()  # delivered / deferred / failed / suppressed

    async def deliver(self, trigger: Trigger, state: UserState | None, now_ms: int) -> Outcome:
        choice = await self.selector.select(trigger, state, now_ms)
        if in_control(self.control, trigger.scene, trigger.user_id):
            # Holdout: no message, no dedupe claim, no cap. Same hash as the
            # strategies and `report`, so the report's uplift lines up.
            return self._hold_out(trigger, choice)
        decision = await self.policy.decide(self._request(trigger, choice, state), now_ms)
        return await self._act(trigger, choice, decision.action, decision.channel,
                               decision.reason, decision.due_ms, now_ms)

    async def release_due(self, now_ms: int, states: StateLookup) -> list[Outcome]:
        """Deferred messages now due: content is chosen again from the user's
        current state, the policy re-checks age, back-off and caps."""
        outcomes = []
        for req in await self.policy.release_due(now_ms):
            trigger = Trigger(req.scene, req.user_id, req.key, req.trigger_ts)
            state = states(req.user_id)
            choice = await self.selector.select(trigger, state, now_ms)
            decision = await self.policy.decide(self._request(trigger, choice, state), now_ms,
                                                released=True)
            outcomes.append(await self._act(trigger, choice, decision.action, decision.channel,
                                            decision.reason, decision.due_ms, now_ms))
        return outcomes

    def _hold_out(self, trigger: Trigger, choice: ContentChoice) -> Outcome:
        self.counts["suppressed"] += 1
        self.policy.suppressed[CONTROL] += 1
        if self.policy.metrics is not None:
            self.policy.metrics.suppressed.labels(reason=CONTROL).inc()
        seg = choice.segmentation
        return Outcome(trigger.trigger_id, trigger.user_id, trigger.scene, "suppressed", CONTROL,
                       None, choice.variant, seg.style, seg.segment, seg.tags)

    def _request(self, trigger: Trigger, choice: ContentChoice,
                 state: UserState | None) -> DeliveryRequest:
        channels = tuple(c for c in choice.channels if c in self.channels)
        tz = state.profile.tz if state is not None else None
        return DeliveryRequest(trigger.trigger_id, trigger.user_id, trigger.scene, trigger.key,
                               trigger.ts, channels, tz)

    async def _act(self, trigger: Trigger, choice: ContentChoice, action: str,
                   channel: str | None, reason: str | None, due_ms: int | None,
                   now_ms: int) -> Outcome:
        seg = choice.segmentation
        base = (trigger.trigger_id, trigger.user_id, trigger.scene)
        if action == "defer":
            self.counts["deferred"] += 1
            return Outcome(*base, "deferred", reason, None, choice.variant, seg.style,
                           seg.segment, seg.tags, due_ms=due_ms)
        if action != "send" or channel is None:
            self.counts["suppressed"] += 1
            return Outcome(*base, "suppressed", reason, None, choice.variant, seg.style,
                           seg.segment, seg.tags)
        message = self.render(trigger, choice, channel, now_ms)
        target = self.dry_run_channel if self.mode == "dry-run" else channel
        result = await self.sender.send(message, target)
        await self.index.remember(message.message_id,
                                  MessageMeta(trigger.user_id, trigger.scene, channel))
        kind: Literal["delivered", "failed"] = "delivered" if result.ok else "failed"
        self.counts[kind] += 1
        if result.ok:
            await self.policy.record_sent(trigger.user_id, now_ms)
        if self.feedback is not None:
            await self.feedback.emit(FeedbackEvent(kind, trigger.user_id, now_ms,
                                                   message.message_id, channel, trigger.scene,
                                                   result.error))
        return Outcome(*base, kind, None if result.ok else result.error, channel,
                       choice.variant, seg.style, seg.segment, seg.tags, message)

    def render(self, trigger: Trigger, choice: ContentChoice, channel: str,
               now_ms: int) -> Message:
        message_id = message_id_for(trigger.trigger_id, channel)
        base, secret = self.tracking_base, self.tracking_secret
        link = (lambda url: tracked_link(base, secret, message_id, url)) if base else None
        content = choice.render(link)
        body = content.html
        if body is not None and base:
            body += open_pixel_html(base, message_id)
        seg = choice.segmentation
        data = {"variant": choice.variant, "style": seg.style, "segment": seg.segment,
                "tags": list(seg.tags), "key": trigger.key, "trigger_ts": trigger.ts,
                "product_ids": [p.product_id for p in choice.products]}
        return Message(message_id, trigger.trigger_id, trigger.user_id, trigger.scene, channel,
                       content.subject, content.text, body, data, now_ms)

    def feedback_app(self, sink: FeedbackSink, callback_token: str | None,
                     allow_hosts: Collection[str] = ()) -> FeedbackApp:
        """Feedback routes sharing this pipeline's message index; opens and
        clicks reset the user's back-off in this pipeline's policy."""
        return FeedbackApp(sink, self.index, self.tracking_secret, callback_token,
                           tuple(allow_hosts), self.policy.record_engaged)

    def summary(self) -> dict[str, Any]:
        return {"delivered": self.counts["delivered"], "failed": self.counts["failed"],
                "deferred": self.counts["deferred"],
                "suppressed": dict(sorted(self.policy.suppressed.items()))}

    def render_summary(self) -> str:
        lines = [f"delivery ({self.mode})",
                 f"  delivered     {self.counts['delivered']:>12,}",
                 f"  failed        {self.counts['failed']:>12,}",
                 f"  deferred      {self.counts['deferred']:>12,}",
                 f"  suppressed    {sum(self.policy.suppressed.values()):>12,}"]
        lines += [f"    {reason:<12}{n:>12,}"
                  for reason, n in sorted(self.policy.suppressed.items())]
        return "\n".join(lines)


class RecordingSender:
    """A sender for dry runs without a channel registry: keeps messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message, channel: str | None = None, *,
                   dead_letter: bool = True) -> DeliveryResult:
        self.messages.append(message)
        return DeliveryResult(True, channel or message.channel, message.message_id)


def content_channels(config: AppConfig) -> list[str]:
    """Every channel named by a content variant or fallback, in first-seen order."""
    names: dict[str, None] = {"inbox": None}
    for scene in config.content.scenes.values():
        for variant in scene.variants:
            names.update(dict.fromkeys(variant.channels))
        names.update(dict.fromkeys(scene.fallback.channels))
    return list(names)


def build_pipeline(config: AppConfig, mode: Mode, sender: Sender,
                   channels: Iterable[str] | None = None, catalog: Catalog | None = None,
                   store: PolicyStore | None = None, index: MessageIndex | None = None,
                   feedback: FeedbackSink | None = None, metrics_registry: Any = None,
                   env: dict[str, str] | None = None) -> DeliveryPipeline:
    """A pipeline from config. Without ``channels`` every channel the content
    names counts as available (right for dry runs)."""
    delivery = config.delivery
    environ = os.environ if env is None else env
    metrics = PolicyMetrics.on(metrics_registry) if metrics_registry is not None else None
    policy = DeliveryPolicy(delivery, store if store is not None else MemoryPolicyStore(),
                            metrics)
    selector = ContentSelector(config.content, catalog if catalog is not None else MemoryCatalog(),
                               delivery.default_timezone)
    secret = environ.get(delivery.tracking.secret_env, "").encode()
    return DeliveryPipeline(selector, policy, sender,
                            list(channels) if channels is not None else content_channels(config),
                            mode, index=index, feedback=feedback,
                            tracking_base=delivery.tracking.base_url, tracking_secret=secret,
                            control=config.strategies.control)
