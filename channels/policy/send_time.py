"""Send-time optimisation in delivery: which requests wait for the user's
best hour, and for how long (docs/timing.md, "Send-time optimisation").

The curve is the engine's (:mod:`triggers.sendtime`, in the user's profile);
the plan is pure; the wait itself is the quiet-hours deferral the policy
already has (:meth:`channels.policy.decide.DeliveryPolicy.decide` with
``timing``): kept in the pending set, released when due, and checked again
then for age, consent, back-off and caps.

A share of users (``delivery.send_time.holdout``, by a salted hash of scene
or strategy and user, as control groups are drawn) is sent at once: the
holdout the ``report --send-time`` lift is measured against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from channels.orders import HandoffAction, SendAction
from channels.policy.control import bucket
from config.models import AppConfig
from config.send_time_models import SendTimeModel, SendTimeSettings
from triggers.sendtime import HOUR_MS, GroupCurves, Rules, events_by_hour, plan, weights_at
from triggers.state import UserState
from triggers.zones import zone_or_none

SEND_TIME = "send_time"  # the deferral's reason (decision log, explain)
BEST = "best"  # arms of a request with a send time, on its output line
HOLDOUT = "holdout"


def journey_key(strategy: str, step: str) -> str:
    return f"journey:{strategy}:{step}"


@dataclass(slots=True)
class Timing:
    """One request's send time: its arm, how long it may wait, the user's
    curve and group. :meth:`hold` is asked by the policy once the zone and
    quiet hours are known."""

    arm: str
    max_delay_ms: int
    state: UserState | None
    group: str
    groups: GroupCurves
    settings: SendTimeSettings

    def hold(self, now_ms: int, latest_ms: int, zone: ZoneInfo,
             quiet: Callable[[int], bool]) -> tuple[int, str] | None:
        """``(due_ms, figures)`` to wait for, or None: send now. Never later
        than ``latest_ms`` (the request's age limit). Every call teaches the
        group the user's curve (holdout users too)."""
        settings = self.settings
        rules = Rules(settings.min_events, settings.peak_ratio)
        profile = self.state.profile if self.state is not None else None
        curve = profile.engagement if profile is not None else {}
        # The curve is in the local hours of the zone its events named.
        own_zone = zone_or_none(profile.tz) if profile is not None else None
        events = sum(cell[1] for cell in curve.values())
        weights = weights_at(curve, now_ms)
        if events >= settings.min_events:
            self.groups.learn(self.group, weights)
        if self.arm != BEST or self.max_delay_ms <= 0:
            return None
        source = ""
        hourly = events_by_hour(curve)
        if events < settings.min_events:
            borrowed = self.groups.curve(self.group)
            taught = self.groups.members.get(self.group, 0)
            if borrowed is None or taught < settings.group_min_users:
                return None
            weights, events, hourly = borrowed, settings.min_events, [0] * 24
            own_zone = own_zone or zone  # the group's curve is in its users' local hours
            source = f"the {self.group} group's curve (learnt from {taught} requests)"
        until = min(now_ms + self.max_delay_ms, latest_ms)
        choice = plan(weights, events, hourly, now_ms, until, quiet, rules, own_zone)
        if choice.due_ms is None:
            return None
        start = datetime.fromtimestamp(choice.due_ms / 1000, UTC).astimezone(zone)
        end = datetime.fromtimestamp((choice.due_ms + HOUR_MS) / 1000, UTC).astimezone(zone)
        why = source or f"{choice.events} engagement{'s' * (choice.events != 1)}"
        return choice.due_ms, (f"held to {start:%H:%M} {zone.key}: best hour "
                               f"{start:%H}\u2013{end:%H} from {why}")


class SendTimer:
    """Which scenes and journey steps have a send time (from config), and
    the group curves learnt so far (this process's)."""

    def __init__(self, settings: SendTimeSettings, delays: Mapping[str, int]) -> None:
        self.settings = settings
        self.delays = dict(delays)  # scene name or journey_key -> max delay (ms)
        self.groups = GroupCurves()

    @classmethod
    def from_config(cls, config: AppConfig) -> SendTimer | None:
        """None when no scene or step asks for a send time (nothing changes)."""
        delays: dict[str, int] = {}
        for name, scene in config.scenes.items():
            model: SendTimeModel | None = getattr(scene, "send_time", None)
            if model is not None:
                delays[name] = model.delay_for(scene.kind)
        for strategy, journey in config.strategies.all_journeys().items():
            for i, step in enumerate(journey.steps):
                if step.send is not None and step.send.send_time is not None:
                    key = journey_key(strategy, step.id or f"step{i + 1}")
                    delays[key] = step.send.send_time.delay_for("journey")
        return cls(config.delivery.send_time, delays) if delays else None

    def timing(self, scene: str, order: SendAction | HandoffAction | None,
               user_id: str, state: UserState | None, group: str) -> Timing | None:
        """The request's timing, or None when its scene or step has no send time."""
        if isinstance(order, HandoffAction):
            return None
        name = journey_key(order.strategy, order.step) if order is not None else scene
        delay = self.delays.get(name)
        if delay is None:
            return None
        settings = self.settings
        holdout = settings.holdout > 0 and bucket(settings.salt, name, user_id) < settings.holdout
        return Timing(HOLDOUT if holdout else BEST, delay, state, group, self.groups, settings)
