"""Delivery policy: after a trigger, before a channel. Decides send (on which
channel), defer (quiet hours) or suppress (with a reason).

Order of checks, each with its reason code:

0. the recipient (:class:`channels.audience.recipient.Recipient`, resolved
   once by the pipeline: directory, consent, do-not-contact) gives the time
   zone of quiet hours and caps (the directory's, else the events', else
   ``default_timezone``); the policy reads only its own store;
1. ``stale``: the trigger is older than ``max_age`` (also when a quiet-hours
   deferral would release it past that age); ``bad_time``: ``now_ms`` (event
   time in a replay) has no calendar date in the user's zone (beyond the
   years 1-9999), so quiet hours and caps cannot be applied;
2. ``duplicate``: the trigger id was claimed before (``SET NX`` with TTL), so
   a retried or replayed trigger is decided once (a decision that fails
   after the claim, e.g. Redis going away, gives the claim back so the
   caller's retry is not mistaken for a duplicate). The claim is a *lease*:
   with it the request is put in the pending set (the sorted set deferrals
   use) due at ``now + lease``; the pipeline removes it once the delivery is
   done (sent, failed and dead-lettered, or suppressed). A process that dies
   in between leaves it there, and :meth:`DeliveryPolicy.release_due` hands
   it out again when the lease expires (at-least-once), at most
   ``lease_attempts`` times (then :attr:`Released.exhausted`);
3. the audience: channels the user cannot or may not be reached on are
   dropped from the request; with none left, ``no_address``,
   ``do_not_contact``, ``unsubscribed`` or ``no_consent`` (the user's own
   opt-out outranks the others). Checked again when a deferral is released;
4. a send time (``timing``, :mod:`channels.policy.send_time`): held to the
   user's best hour (never a quiet one, never past ``max_age``), deferred as
   quiet hours are (reason ``send_time``); a released request is not held again;
   else quiet hours in the user's zone: deferred to the end of the quiet period,
   kept in a sorted set and released by :meth:`DeliveryPolicy.release_due`;
5. ``backoff``: the user ignored the last N deliveries (no open/click) and
   had one within ``pause``;
6. caps, per calendar day / ISO week in the user's zone: ``cap_day`` /
   ``cap_week`` overall; a channel over its own cap passes to the next
   preferred channel, and ``channel_cap`` when none is left.

Time is always a parameter (``now_ms``), never read here, so a simulated
week runs in a test. Counters are keyed by the (simulated) day or week; their
Redis TTL only collects garbage. Every suppression is counted by reason.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from channels.audience.consent import REACH_REASONS
from channels.audience.recipient import Reach, Recipient, open_recipient
from channels.orders import HandoffAction, SendAction
from channels.per_registry import PerRegistry
from channels.policy.send_time import SEND_TIME, Timing
from channels.policy.store import PolicyStore
from channels.redis_client import LEASE_BUCKETS, bucket_tag, lease_bucket, user_tag
from config.delivery_models import DeliveryModel
from triggers.durations import format_duration_ms
from triggers.zones import zone_or_none

STALE = "stale"
DUPLICATE = "duplicate"
BACKOFF = "backoff"
CAP_DAY = "cap_day"
CAP_WEEK = "cap_week"
CHANNEL_CAP = "channel_cap"
NO_CHANNEL = "no_channel"
BAD_TIME = "bad_time"
QUIET_HOURS = "quiet_hours"
SUPPRESS_REASONS = (STALE, BAD_TIME, DUPLICATE, *REACH_REASONS, BACKOFF, CAP_DAY, CAP_WEEK,
                    CHANNEL_CAP, NO_CHANNEL)
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """What the policy decides on. A scene trigger's (``order`` None: its
    scene and key), or a typed order (:mod:`channels.orders`): a journey send,
    deduped by its message id (``trigger_id``), or a lead handoff."""

    trigger_id: str
    user_id: str
    scene: str
    key: str | None
    trigger_ts: int
    channels: tuple[str, ...]
    tz: str | None = None
    order: SendAction | HandoffAction | None = None

    def encode(self) -> str:
        """A pending request as stored (a deferral or a lease)."""
        row: list[Any] = [self.trigger_id, self.user_id, self.scene, self.key, self.trigger_ts,
                          list(self.channels), self.tz]
        if isinstance(self.order, SendAction):
            send = self.order
            row.append([send.strategy, send.step, send.content_ref, send.trigger_id,
                        send.version])
        elif isinstance(self.order, HandoffAction):
            hand = self.order
            row.append(["handoff", hand.score, hand.channel, hand.content_ref])
        return orjson.dumps(row).decode()

    @classmethod
    def decode(cls, data: str | bytes) -> DeliveryRequest:
        tid, user, scene, key, ts, channels, tz, *rest = orjson.loads(data)
        if not rest and scene.startswith(_OLD_JOURNEY) and key is not None and channels:
            # Stored by a version that packed a journey send into scene and key.
            step, ref, origin = orjson.loads(key)
            rest = [[scene[len(_OLD_JOURNEY):], step, ref, origin, 1]]
            scene, key = "", None
        order: SendAction | HandoffAction | None = None
        if rest and rest[0][0] == "handoff" and len(rest[0]) == 4:
            _, score, channel, ref = rest[0]
            order = HandoffAction(user, score, channel, ref, tid, ts)
        elif rest:
            strategy, step, ref, origin, version = rest[0]
            order = SendAction(user, channels[0], ref, strategy, step, tid, ts, version,
                               trigger_id=origin)
        return cls(tid, user, scene, key, ts, tuple(channels), tz, order)


_OLD_JOURNEY = "journey:"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["send", "defer", "suppress"]
    channel: str | None = None
    reason: str | None = None
    due_ms: int | None = None
    # The numbers the deciding rule looked at, e.g. "3 of 3 sent today" (the
    # decision log and `explain` show them; nothing re-derives them).
    figures: str = ""
    leased: bool = False  # a send under a lease: DeliveryPolicy.done() ends it once carried out


@dataclass(frozen=True, slots=True)
class Released:
    """A pending request handed out again: a deferral now due, or a lease
    that expired (its holder died). ``attempts`` counts the hand-outs."""

    request: DeliveryRequest
    attempts: int
    exhausted: bool  # more hand-outs than lease_attempts: dead-letter it, do not send


class DeliveryPolicy:
    def __init__(self, model: DeliveryModel, store: PolicyStore,
                 metrics: Any | None = None) -> None:
        self.model = model
        self.store = store
        self.metrics = metrics  # channels.pipeline.DeliveryMetrics or None
        self.suppressed: Counter[str] = Counter()
        self.deferred = 0
        self._prefix = model.redis_prefix
        # Pending deliveries are spread over buckets by user hash (no key
        # carries them all); the release loop walks every bucket.
        self._deferred_keys = [deferred_key(self._prefix, b) for b in range(LEASE_BUCKETS)]
        quiet = model.quiet_hours
        self._quiet = (quiet.minutes(quiet.start), quiet.minutes(quiet.end)) if (
            quiet.enabled and quiet.start != quiet.end) else None
        self.calendar = Calendar()  # an accelerated demo's; real time otherwise

    def zone(self, tz: str | None) -> ZoneInfo:
        """The user's zone; the default for anything that is not a known zone."""
        return zone_or_none(tz) or ZoneInfo(self.model.default_timezone)

    async def decide(self, req: DeliveryRequest, now_ms: int, released: bool = False,
                     recipient: Recipient | None = None,
                     timing: Timing | None = None) -> Decision:
        """``recipient``: who it goes to (default: an open audience's, in the
        request's zone: every channel reachable); ``timing``: the request's
        send time (held for the user's best hour)."""
        model = self.model
        if now_ms - req.trigger_ts > model.max_age:
            return await self._suppress_unclaimed(
                req, released, STALE, _age_figures(now_ms - req.trigger_ts, model.max_age))
        if recipient is None:
            recipient = replace(open_recipient(req.user_id), zone=req.tz)
        reach = recipient.reach(req.channels)
        zone = self.zone(recipient.zone)
        calendar = self.calendar
        local = local_time(calendar.to_calendar(now_ms), zone)
        try:
            due = None if local is None else self.quiet_until(local)
            due = None if due is None else calendar.from_calendar(due)
            buckets = None if local is None else _buckets(local)
        except (ValueError, OverflowError):  # the wake-up day is past year 9999
            buckets = None
        if buckets is None:
            # Checked before the dedupe claim: a bad time takes no claim.
            return await self._suppress_unclaimed(req, released, BAD_TIME,
                                                  f"{now_ms} has no date in {zone.key}")
        if not released and not await self.claim_leased(req, now_ms):
            return self._suppress(DUPLICATE, f"id {req.trigger_id} already decided within "
                                             f"{format_duration_ms(model.dedupe_ttl)}")
        try:
            assert local is not None  # buckets come from it
            decision = await self._decide_claimed(req, now_ms, due, buckets, zone, reach, local,
                                                  None if released else timing)
        except BaseException:
            # Redis failed (or we were cancelled) after the claim: without this
            # the caller's retry would read its own claim as a duplicate and
            # the message would be lost (if the unclaim fails too, the lease
            # hands the request out again).
            if not released:
                with contextlib.suppress(Exception):
                    await self.store.unclaim(self._claim_key(req.trigger_id, req.user_id))
                    await self.store.done(self._pending(req.user_id), req.trigger_id)
            raise
        if decision.action == "suppress":  # nothing to deliver: not pending any more
            await self.store.done(self._pending(req.user_id), req.trigger_id)
            return decision
        # defer: pending until due (the deferral replaced the lease); send: the
        # pipeline ends the lease once the message is sent or dead-lettered.
        return replace(decision, leased=decision.action == "send")

    async def _suppress_unclaimed(self, req: DeliveryRequest, released: bool, reason: str,
                                  figures: str) -> Decision:
        """Suppressed before the claim. A released request was pending (a
        deferral now due or an expired lease): it is finished too, or it would
        be handed out again after every lease and end as lease_exhausted."""
        if released:
            await self.store.done(self._pending(req.user_id), req.trigger_id)
        return self._suppress(reason, figures)

    def _pending(self, user_id: str) -> str:
        """The user's bucket of pending (deferred and leased) requests."""
        return self._deferred_keys[lease_bucket(user_id)]

    async def done(self, trigger_id: str, user_id: str) -> None:
        """A leased request is delivered, dead-lettered or suppressed: no longer pending."""
        await self.store.done(self._pending(user_id), trigger_id)

    async def claim_leased(self, req: DeliveryRequest, now_ms: int) -> bool:
        """Dedupe ``req`` by its id and, when first, keep it pending until
        ``now + lease`` (in one step: a crash cannot leave a claim without it)."""
        return await self.store.claim_leased(
            self._claim_key(req.trigger_id, req.user_id), self.model.dedupe_ttl, now_ms,
            self._pending(req.user_id), req.trigger_id, req.encode(), now_ms + self.model.lease)

    async def claim(self, message_id: str, user_id: str, now_ms: int) -> bool:
        """Dedupe: True only the first time ``message_id`` (a trigger id or a
        journey message id) is claimed within ``dedupe_ttl``."""
        return await self.store.claim(self._claim_key(message_id, user_id),
                                      self.model.dedupe_ttl, now_ms)

    def _claim_key(self, message_id: str, user_id: str) -> str:
        return claim_key(self._prefix, message_id, user_id)

    async def _decide_claimed(self, req: DeliveryRequest, now_ms: int, due: int | None,
                              buckets: tuple[str, str], zone: ZoneInfo,
                              reach: Reach, local: datetime,
                              timing: Timing | None = None) -> Decision:
        model = self.model
        channels = req.channels
        if channels and not reach.allowed:
            return self._suppress(reach.reason or NO_CHANNEL, reach.figures)
        channels = reach.allowed
        held = None if timing is None else timing.hold(
            now_ms, req.trigger_ts + model.max_age, zone,
            lambda ms: self.quiet_until(datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone))
            is not None)
        if held is not None:  # the user's best hour (never a quiet one): deferred as below
            await self.store.defer(self._pending(req.user_id), req.trigger_id, req.encode(),
                                   held[0])
            self.deferred += 1
            return Decision("defer", reason=SEND_TIME, due_ms=held[0], figures=held[1])
        if due is not None:
            wake = datetime.fromtimestamp(due / 1000, UTC).astimezone(zone)
            until = f"until {wake:%H:%M} {zone.key}"
            if due - req.trigger_ts > model.max_age:
                return self._suppress(STALE, f"{until} would make it "
                                             f"{_age_figures(due - req.trigger_ts, model.max_age)}")
            await self.store.defer(self._pending(req.user_id), req.trigger_id, req.encode(), due)
            self.deferred += 1
            if self.metrics is not None:
                self.metrics.deferred.inc()
            return Decision("defer", reason=QUIET_HOURS, due_ms=due, figures=until)
        ignored, last_sent = await self.store.engagement(engagement_key(self._prefix, req.user_id))
        since = None if last_sent is None else self.calendar.span(now_ms - last_sent)
        if ignored >= model.backoff.ignored and since is not None and since < model.backoff.pause:
            return self._suppress(BACKOFF, f"{ignored} sent without an open or click, the "
                                           f"last {format_duration_ms(since)} ago "
                                           f"(pause {format_duration_ms(model.backoff.pause)})")
        if not channels:
            return self._suppress(NO_CHANNEL, "none of the content's channels is configured")
        day, week = buckets
        overall = self._counters(req.user_id, "all", model.caps.per_day, model.caps.per_week,
                                 day, week)
        over: list[str] = []
        for channel in channels:
            caps = model.channel_caps.get(channel)
            own = self._counters(req.user_id, f"ch:{channel}", caps.per_day if caps else None,
                                 caps.per_week if caps else None, day, week) if caps else []
            full = await self.store.reserve([c for c, _ in overall] + [c for c, _ in own],
                                            now_ms)
            if full < 0:
                passed = f"{', '.join(over)}; sent by {channel}" if over else (
                    f"local {local:%H:%M} {zone.key}, under {_caps_text(model)}")
                return Decision("send", channel=channel, figures=passed)
            if full < len(overall):
                (_key, limit, _ttl), reason = overall[full]
                return self._suppress(reason, _cap_figures(reason, limit, zone))
            (_key, limit, _ttl), reason = own[full - len(overall)]
            over.append(f"{channel} {_cap_figures(reason, limit, zone)}")
        return self._suppress(CHANNEL_CAP, "; ".join(over))

    def quiet_until(self, local: datetime) -> int | None:
        """When the quiet period containing ``local`` ends (epoch ms), or None."""
        if self._quiet is None:
            return None
        start, end = self._quiet
        minute = local.hour * 60 + local.minute
        quiet = start <= minute < end if start < end else (minute >= start or minute < end)
        if not quiet:
            return None
        day = local.date() if minute < end else local.date() + timedelta(days=1)
        wake = datetime(day.year, day.month, day.day, end // 60, end % 60, tzinfo=local.tzinfo)
        return int(wake.timestamp() * 1000)

    async def release_due(self, now_ms: int, limit: int = 1000) -> list[Released]:
        """Pending requests now due: deferrals whose quiet hours ended and
        leases that expired. Each is leased again (one sweeper gets it;
        if that one dies too, it comes back after the lease)."""
        rows = await self.store.take_due(self._deferred_keys, now_ms, limit, self.model.lease)
        return [Released(DeliveryRequest.decode(row), tries, tries > self.model.lease_attempts)
                for row, tries in rows]

    async def deferred_count(self) -> int:
        return await self.store.deferred_count(self._deferred_keys)

    async def record_sent(self, user_id: str, now_ms: int, lease: str | None = None) -> None:
        """A message reached the user; ``lease``: the request whose lease
        ends with it (in the same Redis round trip)."""
        await self.store.note_sent(engagement_key(self._prefix, user_id), now_ms,
                                   None if lease is None else (self._pending(user_id), lease))

    async def record_engaged(self, user_id: str) -> None:
        """An open or click: the back-off count starts again."""
        await self.store.note_engaged(engagement_key(self._prefix, user_id))

    def _counters(self, user_id: str, scope: str, per_day: int | None, per_week: int | None,
                  day: str, week: str) -> list[tuple[tuple[str, int, int], str]]:
        out = []
        base = caps_key(self._prefix, user_id, scope)
        if per_day is not None:
            out.append(((f"{base}:d:{day}", per_day, 2 * _DAY_MS), CAP_DAY))
        if per_week is not None:
            out.append(((f"{base}:w:{week}", per_week, 8 * _DAY_MS), CAP_WEEK))
        return out

    def _suppress(self, reason: str, figures: str) -> Decision:
        self.suppressed[reason] += 1
        if self.metrics is not None:
            self.metrics.suppressed.labels(reason=reason).inc()
        return Decision("suppress", reason=reason, figures=figures)



# The keys under ``delivery.redis_prefix`` (erasure finds a user's by them).
# A user's keys carry the ``{user}`` hash tag; a bucket's keys the bucket's
# tag ``{dNN}`` (one Redis Cluster slot each: see channels.redis_client).
def deferred_key(prefix: str, bucket: int) -> str:
    """One bucket of the sorted set of deferred and leased requests
    (policy_store's payload_key/tries_key live beside it)."""
    return f"{prefix}deferred:{bucket_tag(bucket)}"


def claim_key(prefix: str, message_id: str, user_id: str) -> str:
    """The dedupe claim of one trigger or journey message id (it embeds the
    user id). In the slot of the user's pending bucket: the claim and its
    lease are one script."""
    return f"{prefix}dd:{bucket_tag(lease_bucket(user_id))}:{message_id}"


def engagement_key(prefix: str, user_id: str) -> str:
    """A user's sent-without-engagement count and last send (back-off)."""
    return f"{prefix}eng:{user_tag(user_id)}"


def caps_key(prefix: str, user_id: str, scope: str) -> str:
    """The base of a user's frequency-cap counters in ``scope`` (``:d:DAY``, ``:w:WEEK``)."""
    return f"{prefix}cap:{user_tag(user_id)}:{scope}"


def _age_figures(age_ms: int, max_age_ms: int) -> str:
    return (f"{format_duration_ms(max(0, age_ms) // 1000 * 1000)} old, "
            f"max_age {format_duration_ms(max_age_ms)}")


def _caps_text(model: DeliveryModel) -> str:
    caps = [f"{name} {limit}" for name, limit in (("cap_day", model.caps.per_day),
                                                  ("cap_week", model.caps.per_week))
            if limit is not None]
    return " and ".join(caps) if caps else "no caps"


def _cap_figures(reason: str, limit: int, zone: ZoneInfo) -> str:
    # A cap refuses only when full, so the count it saw is its limit.
    period = "today" if reason == CAP_DAY else "this week"
    return f"{limit} of {limit} sent {period} ({zone.key})"


@dataclass(frozen=True, slots=True)
class Calendar:
    """The clock the policy reads days, weeks and hours of the day from. Real
    time by default; the demo, which divides journey waits by its journey
    scale, runs this calendar as many times faster from its start, so a
    compressed journey meets the caps, quiet hours and back-off pause it would
    meet in real time (a cap's day is 15 simulated minutes at the demo's scale 96)."""

    anchor_ms: int = 0
    scale: float = 1.0

    def to_calendar(self, ms: int) -> int:
        return ms if self.scale == 1 else int(self.anchor_ms + (ms - self.anchor_ms) * self.scale)

    def span(self, ms: int) -> int:
        """A span of real time as the calendar counts it (the back-off pause)."""
        return ms if self.scale == 1 else int(ms * self.scale)

    def from_calendar(self, ms: int) -> int:
        return ms if self.scale == 1 else int(self.anchor_ms + (ms - self.anchor_ms) / self.scale)


def local_time(now_ms: int, zone: ZoneInfo) -> datetime | None:
    """``now_ms`` in ``zone``, or None when it has no date there: event times
    are any 64-bit integer, datetime only covers the years 1-9999."""
    try:
        return datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(zone)
    except (ValueError, OverflowError, OSError):
        return None


def _buckets(local: datetime) -> tuple[str, str]:
    year, week, _ = local.isocalendar()
    return local.strftime("%Y%m%d"), f"{year}W{week:02d}"


@dataclass(frozen=True, slots=True)
class PolicyMetrics:
    suppressed: Any  # prometheus Counter, label: reason
    deferred: Any  # prometheus Counter

    @classmethod
    def on(cls, registry: Any) -> PolicyMetrics:
        """One set per Prometheus registry (registering twice fails)."""
        return _METRICS.get(registry, lambda: cls._create(registry))

    @classmethod
    def _create(cls, registry: Any) -> PolicyMetrics:
        from prometheus_client import Counter as PromCounter

        suppressed = PromCounter("scenetrigger_suppressed", "Deliveries suppressed by the policy",
                                 ["reason"], registry=registry)
        for reason in SUPPRESS_REASONS:  # every series exists from the start, at 0
            suppressed.labels(reason=reason)
        return cls(suppressed, PromCounter("scenetrigger_deferred",
                                           "Deliveries deferred by quiet hours",
                                           registry=registry))


_METRICS: PerRegistry[PolicyMetrics] = PerRegistry()
