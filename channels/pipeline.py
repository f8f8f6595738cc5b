"""DeliveryPipeline: trigger + user state -> content -> policy -> channel.
Journey sends (a strategy's content ref) and lead handoffs take the same
road as typed orders (:mod:`channels.orders`; :meth:`DeliveryPipeline.deliver_send`,
:meth:`DeliveryPipeline.hand_off`). Build one with
:func:`channels.assembly.open_delivery` (it also owns what must be closed).

Modes: ``dry-run`` renders and applies the policy (in memory unless given a
store) and hands every message to a log channel; ``live`` sends through the
configured channels (:class:`channels.transports.registry.ChannelSender`). Both return
an :class:`Outcome` per trigger for display, and report delivered / failed
to the feedback sink. ``now_ms`` is always a parameter.
"""

from __future__ import annotations

import hashlib
import html
import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from channels.audience.consent import unsubscribe_url
from channels.audience.recipient import AnyAudience, OpenAudience, Recipient
from channels.base import INFRASTRUCTURE_ERRORS, DeliveryResult, Message
from channels.content.select import ContentChoice, ContentSelector
from channels.feedback.decisions import DecisionLog, DecisionRecord
from channels.feedback.events import (
    FeedbackApp,
    FeedbackSink,
    MemoryMessageIndex,
    MessageIndex,
    MessageMeta,
    open_pixel_html,
    tracked_link,
)
from channels.orders import HandoffAction, SendAction
from channels.policy.control import (
    GLOBAL,
    GLOBAL_CONTROL,
    bucket,
    in_control,
    in_global_control,
    share_for,
)
from channels.policy.decide import (
    DUPLICATE,
    NO_CHANNEL,
    Decision,
    DeliveryPolicy,
    DeliveryRequest,
)
from channels.policy.send_time import SendTimer
from channels.transports.registry import contact_data
from config.strategy_models import ControlModel
from triggers.events import Trigger
from triggers.state import UserState

Mode = Literal["dry-run", "live"]
ERROR = "error"  # dead-letter reason: delivering the request raised
LEASE_EXHAUSTED = "lease_exhausted"  # dead-letter reason: handed out lease_attempts times

log = logging.getLogger("scenetrigger.deliver")
CONTROL = "control"  # suppression reason of a scene's control (holdout) user
StateLookup = Callable[[str], UserState | None]
JOURNEY_LABEL = "journey:"  # the decision log's scene label of a journey order


class DeadLetters(Protocol):
    """Where a request that will not be delivered is kept (its reason, for redrive)."""

    async def add_record(self, source: str, raw: bytes | None, reason: str,
                         detail: str) -> str: ...


class Sender(Protocol):
    """What the pipeline needs of :class:`channels.transports.registry.ChannelSender`:
    a send, and its dead-letter store (None: a dry run keeps none)."""

    @property
    def dead_letter(self) -> DeadLetters | None: ...

    async def send(self, message: Message, channel: str | None = None, *,
                   dead_letter: bool = True) -> DeliveryResult: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What became of one trigger or order (built with keywords: 14 fields)."""

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
    order: SendAction | HandoffAction | None = None  # None: a scene trigger's
    figures: str = ""  # the deciding rule's numbers (channels.policy.decide.Decision.figures)
    send_time: str | None = None  # best / holdout: the request had a send time (send_time.py)

    def label(self) -> str:
        """The scene, or what the order is for: ``journey:<strategy>``, ``journey:handoff``."""
        if isinstance(self.order, SendAction):
            return JOURNEY_LABEL + self.order.strategy
        if isinstance(self.order, HandoffAction):
            return JOURNEY_LABEL + "handoff"
        return self.scene

    def record(self, now_ms: int) -> DecisionRecord:
        """This outcome as the decision log's record."""
        rule = self.reason if self.status in ("deferred", "suppressed") else None
        figures = self.figures
        if self.status == "failed" and self.reason:
            figures = self.reason  # the channel's error
        return DecisionRecord(now_ms, self.user_id, self.trigger_id, self.label(), self.status,
                              rule, figures, self.channel, self.variant,
                              self.message.message_id if self.message is not None else None,
                              self.due_ms)

    def fields(self) -> dict[str, Any]:
        """Extra output fields (after the four contract fields of a trigger line)."""
        out: dict[str, Any] = {"delivery": self.status, "channel": self.channel,
                               "variant": self.variant, "segment": self.segment,
                               "style": self.style}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.figures:
            out["figures"] = self.figures
        if self.due_ms is not None:
            out["due_ms"] = self.due_ms
        if self.reason == CONTROL:
            out["group"] = CONTROL  # held out: `report` counts it as a control unit
        elif self.reason == GLOBAL_CONTROL:
            out["group"] = "global"  # `report`: the "all marketing vs none" row
        if self.message is not None:
            out["subject"] = self.message.subject
        if self.send_time is not None:
            out["send_time"] = self.send_time
        return out


def message_id_for(trigger_id: str, channel: str, step: int = 0) -> str:
    """Deterministic: the same trigger, channel and step give the same id."""
    raw = f"{trigger_id}|{channel}|{step}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def journey_request(send: SendAction, tz: str | None) -> DeliveryRequest:
    """The policy's view of a journey send: dedupe by its message id."""
    return DeliveryRequest(send.message_id, send.user_id, "", None, send.ts, (send.channel,),
                           tz, send)


def _profile(state: UserState | None) -> Any:
    return state.profile if state is not None else None


class DeliveryPipeline:
    def __init__(self, selector: ContentSelector, policy: DeliveryPolicy, sender: Sender,
                 channels: Collection[str], mode: Mode = "dry-run",
                 dry_run_channel: str = "log", index: MessageIndex | None = None,
                 feedback: FeedbackSink | None = None, tracking_base: str | None = None,
                 tracking_secret: bytes = b"", control: ControlModel | None = None,
                 audience: AnyAudience | None = None) -> None:
        self.selector = selector
        # Who a message goes to: resolved once per decision (an open audience
        # in a dry run: every channel reachable).
        self.audience: AnyAudience = audience if audience is not None else OpenAudience()
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
        self.decisions: DecisionLog | None = None  # every outcome is written here when set
        self.send_timer: SendTimer | None = None  # scenes and steps held for the best hour

    async def _recipient(self, user_id: str, scene: str, state: UserState | None) -> Recipient:
        audience = self.audience
        return await audience.resolve(user_id, audience.purpose(scene), _profile(state))

    async def deliver(self, trigger: Trigger, state: UserState | None, now_ms: int) -> Outcome:
        recipient = await self._recipient(trigger.user_id, trigger.scene, state)
        choice = await self.selector.select(trigger, state, now_ms, recipient)
        if in_global_control(self.control, trigger.user_id):
            return self._hold_out(trigger, choice, now_ms, globally=True)
        if in_control(self.control, trigger.scene, trigger.user_id):
            # Holdout: no message, no dedupe claim, no cap. Same hash as the
            # strategies and `report`, so the report's uplift lines up.
            return self._hold_out(trigger, choice, now_ms)
        req = self._request(trigger, choice, state)
        return await self._decide_and_act(req, choice, state, recipient, now_ms)

    async def _decide_and_act(self, req: DeliveryRequest, choice: ContentChoice,
                              state: UserState | None, recipient: Recipient,
                              now_ms: int) -> Outcome:
        """The policy's decision carried out; a request with a send time is
        marked with its arm (best or holdout: ``report --send-time``)."""
        seg = choice.segmentation
        timing = None if self.send_timer is None else self.send_timer.timing(
            req.scene, req.order, req.user_id, state, f"{seg.style}/{seg.segment}")
        decision = await self.policy.decide(req, now_ms, recipient=recipient, timing=timing)
        outcome = await self._act(req, choice, decision, now_ms, recipient)
        return outcome if timing is None else replace(outcome, send_time=timing.arm)

    async def deliver_send(self, send: SendAction, state: UserState | None,
                           now_ms: int) -> Outcome:
        """A journey's send step: its content ref chosen for the user, then the
        policy (dedupe by the action's deterministic message id, quiet hours,
        back-off, caps) and the channel the step names. Control users never
        get here: the journey engine holds them out."""
        req = journey_request(send, state.profile.tz if state is not None else None)
        recipient = await self._recipient(send.user_id, "", state)
        choice = self.selector.choose_ref(send.content_ref, send.user_id, state, now_ms,
                                          recipient)
        if send.channel not in self.channels:
            return self._act_suppressed(req, choice, NO_CHANNEL, now_ms,
                                        f"the step's channel {send.channel} is not configured")
        return await self._decide_and_act(req, choice, state, recipient, now_ms)

    async def hand_off(self, handoff: HandoffAction, state: UserState | None,
                       now_ms: int) -> Outcome:
        """A lead handoff to its channel (a CRM webhook), once per message id.
        Not a message to the user: no quiet hours, caps or back-off."""
        choice = self._handoff_choice(handoff, state, now_ms)
        req = DeliveryRequest(handoff.message_id, handoff.user_id, "", None, handoff.ts,
                              (handoff.channel,), order=handoff)
        if handoff.channel not in self.channels:
            return self._act_suppressed(req, choice, NO_CHANNEL, now_ms,
                                        f"the handoff channel {handoff.channel} is not configured")
        if not await self.policy.claim_leased(req, now_ms):  # a lease, as every send
            return self._act_suppressed(req, choice, DUPLICATE, now_ms,
                                        f"handoff {handoff.message_id} already sent")
        return await self._hand_over(req, handoff, choice, now_ms)

    def _handoff_choice(self, handoff: HandoffAction, state: UserState | None,
                        now_ms: int) -> ContentChoice:
        # For sales, not the user: no directory read, the events' locale.
        recipient = self.audience.unchecked(handoff.user_id, "transactional", _profile(state))
        return self.selector.choose_ref(handoff.content_ref, handoff.user_id, state, now_ms,
                                        recipient)

    async def _hand_over(self, req: DeliveryRequest, handoff: HandoffAction,
                         choice: ContentChoice, now_ms: int) -> Outcome:
        data = {"kind": "handoff", "score": handoff.score, "content_ref": handoff.content_ref}
        recipient = self.audience.unchecked(handoff.user_id, "transactional", None)
        return await self._act(req, choice, Decision("send", handoff.channel, leased=True),
                               now_ms, recipient, data)

    async def release_due(self, now_ms: int, states: StateLookup) -> list[Outcome]:
        """Deferred messages now due, each through :meth:`release_one` (channels.arms
        routes it by arm): content chosen again, age, back-off and caps re-checked."""
        outcomes = []
        for released in await self.policy.release_due(now_ms):
            req = released.request
            if released.exhausted:  # handed out again and again, never finished
                await self._bury_request(req, LEASE_EXHAUSTED, f"handed out "
                                         f"{released.attempts} times without finishing")
                continue
            try:
                outcome = await self.release_one(req, now_ms, states)
            except INFRASTRUCTURE_ERRORS:
                continue  # still pending: handed out again when its new lease expires
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def release_one(self, req: DeliveryRequest, now_ms: int,
                          states: StateLookup) -> Outcome | None:
        state = states(req.user_id)
        send = req.order
        try:
            if isinstance(send, HandoffAction):  # its holder died: hand it over again
                choice = self._handoff_choice(send, state, now_ms)
            else:
                recipient = await self._recipient(req.user_id, req.scene, state)
            if isinstance(send, SendAction):
                choice = self.selector.choose_ref(send.content_ref, send.user_id, state,
                                                  now_ms, recipient)
            elif send is None:
                trigger = Trigger(req.scene, req.user_id, req.key, req.trigger_ts)
                choice = await self.selector.select(trigger, state, now_ms, recipient)
                req = self._request(trigger, choice, state)
            if not isinstance(send, HandoffAction):
                decision = await self.policy.decide(req, now_ms, True, recipient)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:  # this request only: dead-letter it, release the rest
            log.exception("releasing a delivery failed", extra={"trigger_id": req.trigger_id})
            await self._bury_request(req, ERROR, f"{type(exc).__name__}: {exc}")
            return None
        if isinstance(send, HandoffAction):
            return await self._hand_over(req, send, choice, now_ms)
        return await self._act(req, choice, decision, now_ms, recipient)

    async def _bury_request(self, req: DeliveryRequest, reason: str, detail: str) -> None:
        """A leased request that will not be delivered: into the dead-letter
        (when the sender has one) with its reason, and no longer pending."""
        store = self.sender.dead_letter  # None in a dry run
        if store is not None:
            await store.add_record(f"request/{req.trigger_id}", req.encode().encode(), reason,
                                   detail[:1_000])
        self.counts["dead_lettered"] += 1
        await self.policy.done(req.trigger_id, req.user_id)

    def _hold_out(self, trigger: Trigger, choice: ContentChoice, now_ms: int,
                  globally: bool = False) -> Outcome:
        req = DeliveryRequest(trigger.trigger_id, trigger.user_id, trigger.scene, trigger.key,
                              trigger.ts, ())
        name = GLOBAL if globally else trigger.scene
        share = self.control.global_share if globally else share_for(self.control, name)
        place = bucket(self.control.salt, name, trigger.user_id)
        figures = (f"user's bucket {place:.3f} < share {share:g} held out of "
                   f"{'all marketing' if globally else trigger.scene}")
        return self._act_suppressed(req, choice, GLOBAL_CONTROL if globally else CONTROL,
                                    now_ms, figures)

    def _done(self, outcome: Outcome, now_ms: int) -> Outcome:
        """Every outcome leaves through here: the decision log sees each one."""
        if self.decisions is not None:
            self.decisions.write(outcome.record(now_ms))
        return outcome

    def _act_suppressed(self, req: DeliveryRequest, choice: ContentChoice,
                        reason: str, now_ms: int, figures: str) -> Outcome:
        """A suppression decided here rather than by the policy, counted alike."""
        self.counts["suppressed"] += 1
        self.policy.suppressed[reason] += 1
        if self.policy.metrics is not None:
            self.policy.metrics.suppressed.labels(reason=reason).inc()
        return self._done(_outcome(req, choice, "suppressed", reason, figures=figures,
                                   order=req.order), now_ms)

    def _request(self, trigger: Trigger, choice: ContentChoice,
                 state: UserState | None) -> DeliveryRequest:
        channels = tuple(c for c in choice.channels if c in self.channels)
        tz = state.profile.tz if state is not None else None
        return DeliveryRequest(trigger.trigger_id, trigger.user_id, trigger.scene, trigger.key,
                               trigger.ts, channels, tz)

    async def _act(self, req: DeliveryRequest, choice: ContentChoice, decision: Decision,
                   now_ms: int, recipient: Recipient,
                   extra: dict[str, Any] | None = None) -> Outcome:
        """Carry out ``decision``; a leased one is no longer pending after it
        (deferred: pending until it is due). An infrastructure fault keeps
        the lease (handed out again when it expires: at-least-once); any
        other exception is this request's alone: it is dead-lettered and
        the outcome is ``failed`` with the error as its reason."""
        try:
            outcome, ended = await self._carry_out(req, choice, decision, now_ms, recipient,
                                                   extra)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            log.exception("delivering a request failed", extra={"trigger_id": req.trigger_id})
            error = f"{type(exc).__name__}: {exc}"
            await self._bury_request(req, ERROR, error)
            self.counts["failed"] += 1
            return self._done(_outcome(req, choice, "failed", f"{ERROR}: {error}"[:500],
                                       channel=decision.channel, figures=decision.figures),
                              now_ms)
        if decision.leased and not ended:
            await self.policy.done(req.trigger_id, req.user_id)
        return outcome

    async def _carry_out(self, req: DeliveryRequest, choice: ContentChoice, decision: Decision,
                         now_ms: int, recipient: Recipient,
                         extra: dict[str, Any] | None) -> tuple[Outcome, bool]:
        """The outcome, and whether the lease already ended with it."""
        channel = decision.channel
        order = req.order
        if decision.action == "defer":
            self.counts["deferred"] += 1
            return self._done(_outcome(req, choice, "deferred", decision.reason,
                                       due_ms=decision.due_ms, figures=decision.figures,
                                       order=order), now_ms), False
        if decision.action != "send" or channel is None:
            self.counts["suppressed"] += 1
            return self._done(_outcome(req, choice, "suppressed", decision.reason,
                                       figures=decision.figures, order=order), now_ms), False
        if isinstance(order, SendAction):
            message = self.render_send(order, choice, now_ms, recipient)
            meta = MessageMeta(req.user_id, "", channel, order.strategy, order.step)
        elif isinstance(order, HandoffAction):
            message = self._message(req.trigger_id, req.trigger_id, req.user_id, channel,
                                    choice, now_ms, extra or {}, recipient)
            meta = MessageMeta(req.user_id, "", channel)
        else:
            trigger = Trigger(req.scene, req.user_id, req.key, req.trigger_ts)
            message = self.render(trigger, choice, channel, now_ms, recipient)
            meta = MessageMeta(req.user_id, req.scene, channel)
        target = self.dry_run_channel if self.mode == "dry-run" else channel
        result = await self.sender.send(message, target)
        await self.index.remember(message.message_id, meta)
        kind: Literal["delivered", "failed"] = "delivered" if result.ok else "failed"
        self.counts[kind] += 1
        ended = False
        if result.ok and not isinstance(order, HandoffAction):  # a handoff goes to sales
            await self.policy.record_sent(req.user_id, now_ms,
                                          req.trigger_id if decision.leased else None)
            ended = decision.leased
        if self.feedback is not None:
            await self.feedback.emit(meta.event(kind, message.message_id, now_ms, result.error))
        return self._done(_outcome(req, choice, kind, None if result.ok else result.error,
                                   channel=channel, message=message, figures=decision.figures,
                                   order=order), now_ms), ended

    def render(self, trigger: Trigger, choice: ContentChoice, channel: str,
               now_ms: int, recipient: Recipient | None = None) -> Message:
        data = {"key": trigger.key, "trigger_ts": trigger.ts,
                "product_ids": [p.product_id for p in choice.products]}
        return self._message(message_id_for(trigger.trigger_id, channel), trigger.trigger_id,
                             trigger.scene, channel, choice, now_ms, data,
                             recipient or self.audience.unchecked(trigger.user_id, "marketing",
                                                                  None))

    def render_send(self, send: SendAction, choice: ContentChoice, now_ms: int,
                    recipient: Recipient | None = None) -> Message:
        """A journey message: the action's id, no scene, its strategy and step in ``data``."""
        data = {"strategy": send.strategy, "step": send.step, "content_ref": send.content_ref}
        return self._message(send.message_id, send.trigger_id or send.message_id, "",
                             send.channel, choice, now_ms, data,
                             recipient or self.audience.unchecked(send.user_id, "marketing",
                                                                  None))

    def _message(self, message_id: str, trigger_id: str, scene: str,
                 channel: str, choice: ContentChoice, now_ms: int,
                 extra: dict[str, Any], recipient: Recipient) -> Message:
        base, secret = self.tracking_base, self.tracking_secret
        link = (lambda url: tracked_link(base, secret, message_id, url)) if base else None
        contact = recipient.contact
        content = choice.render(link, contact.template_values() if contact else None)
        text, body = content.text, content.html
        seg = choice.segmentation
        data = {"variant": choice.variant, "style": seg.style, "segment": seg.segment,
                "tags": list(seg.tags), **extra}
        if contact is not None:
            data.update(contact_data(contact))  # each channel type's fields (its kind's)
            if contact.locale is not None:
                data["locale"] = contact.locale
        unsubscribe = recipient.unsubscribe_kind(channel)
        if base and unsubscribe is not None:
            # Every marketing email carries the signed link (and, in the email
            # channel, the RFC 8058 List-Unsubscribe headers built from it).
            url = unsubscribe_url(base, secret, recipient.user_id, unsubscribe)
            data["unsubscribe_url"] = url
            text += f"\n\nUnsubscribe: {url}"
            if body is not None:
                body += f'<p><a href="{html.escape(url)}">Unsubscribe</a></p>'
        if body is not None and base:
            body += open_pixel_html(base, secret, message_id)
        return Message(message_id, trigger_id, recipient.user_id, scene, channel,
                       content.subject, text, body, data, now_ms)

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


def _outcome(req: DeliveryRequest, choice: ContentChoice,
             status: Literal["delivered", "deferred", "suppressed", "failed"],
             reason: str | None, *, channel: str | None = None, message: Message | None = None,
             due_ms: int | None = None, order: SendAction | HandoffAction | None = None,
             figures: str = "") -> Outcome:
    """An outcome of ``req`` with the chosen content's variant and segmentation."""
    seg = choice.segmentation
    return Outcome(trigger_id=req.trigger_id, user_id=req.user_id, scene=req.scene,
                   status=status, reason=reason, channel=channel, variant=choice.variant,
                   style=seg.style, segment=seg.segment, tags=seg.tags, message=message,
                   due_ms=due_ms, order=order, figures=figures)
