"""Send-time optimisation through the delivery pipeline (channels.policy.send_time):
the known effect (opens at hour H of the local day -> sends held to H), a
flat curve sent at once, the holdout, quiet hours, the age limit, group
curves for new users, and the deferral released at its hour."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from channels.assembly import DryRunSender, build_pipeline
from channels.pipeline import DeliveryPipeline
from channels.policy.control import bucket
from config.loader import load_config_text
from config.models import AppConfig
from triggers.events import Event, Trigger
from triggers.state import UserState

HOUR = 3_600_000
DAY = 24 * HOUR
START = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp() * 1000)  # a Monday
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Shanghai", "Australia/Sydney")


def config(holdout: float = 0.0, max_delay: str = "24h", quiet: bool = True,
           max_age: str = "48h", kind: str = "absence") -> AppConfig:
    scene = ("kind: absence\n    start: {type: cart}\n    after: 30m" if kind == "absence"
             else "kind: arrival\n    when: {type: view}")
    return load_config_text(f"""
scenes:
  reminder:
    {scene}
    send_time: {{mode: best, max_delay: {max_delay}}}
delivery:
  max_age: {max_age}
  caps: {{per_day: 100, per_week: 1000}}
  quiet_hours: {{enabled: {str(quiet).lower()}}}
  send_time: {{holdout: {holdout}}}
""")


def pipeline_for(cfg: AppConfig) -> tuple[DeliveryPipeline, DryRunSender]:
    sender = DryRunSender()
    return build_pipeline(cfg, "dry-run", sender), sender


def local_ms(day: int, hour: float, zone: ZoneInfo) -> int:
    """``hour`` o'clock local on day ``day`` after START."""
    base = datetime(2024, 3, 4, tzinfo=zone) + timedelta(days=day)
    return int((base + timedelta(hours=hour)).timestamp() * 1000)


def opener(user: str, zone: str, hour: int, rng: random.Random, opens: int = 14,
           noise: int = 3) -> UserState:
    """Opens around ``hour`` local over four weeks, plus a few at random hours."""
    tz = ZoneInfo(zone)
    times = [local_ms(rng.randrange(28), hour + rng.random(), tz) for _ in range(opens)]
    times += [START + rng.randrange(28 * DAY) for _ in range(noise)]
    state = UserState()
    for ts in sorted(times):
        state.profile.update(Event(user, ts, "opened", {"tz": zone}))
    return state


def local_distance_minutes(ms: int, hour: int, zone: str) -> float:
    local = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(zone))
    minutes = local.hour * 60 + local.minute - hour * 60
    return min(abs(minutes), 1440 - abs(minutes))


async def test_opens_at_hour_h_get_sends_scheduled_within_an_hour_of_h() -> None:
    rng = random.Random(2023)
    pipeline, _ = pipeline_for(config(quiet=False))
    hits = total = 0
    for i in range(200):
        zone = rng.choice(ZONES)
        hour = rng.randrange(24)
        state = opener(f"u{i}", zone, hour, rng)
        now = START + 29 * DAY + rng.randrange(7 * DAY)  # the week after the opens
        outcome = await pipeline.deliver(Trigger("reminder", f"u{i}", None, now), state, now)
        assert outcome.send_time == "best"
        scheduled = outcome.due_ms if outcome.status == "deferred" else now
        assert outcome.status in ("deferred", "delivered"), outcome
        assert scheduled is not None and now <= scheduled <= now + DAY
        total += 1
        hits += local_distance_minutes(scheduled, hour, zone) <= 60
    assert total == 200
    assert hits / total >= 0.9, f"{hits} of {total} within an hour of H"


async def test_a_flat_curve_is_sent_at_once() -> None:
    pipeline, sender = pipeline_for(config(quiet=False))
    state = UserState()
    for day in range(7):
        for hour in range(24):  # one open in every hour of the week
            state.profile.update(Event("f", START + day * DAY + hour * HOUR + 60_000, "opened", {}))
    now = START + 8 * DAY + 3 * HOUR
    outcome = await pipeline.deliver(Trigger("reminder", "f", None, now), state, now)
    assert (outcome.status, outcome.send_time) == ("delivered", "best")
    assert len(sender.messages) == 1


async def test_the_hold_is_explained_and_released_at_its_hour() -> None:
    pipeline, sender = pipeline_for(config(quiet=False))
    rng = random.Random(5)
    state = opener("e", "Europe/Berlin", 20, rng, opens=14, noise=0)
    now = local_ms(30, 9.5, ZoneInfo("Europe/Berlin"))
    trig = Trigger("reminder", "e", None, now)
    outcome = await pipeline.deliver(trig, state, now)
    assert (outcome.status, outcome.reason) == ("deferred", "send_time")
    assert outcome.due_ms == local_ms(30, 20, ZoneInfo("Europe/Berlin"))
    assert outcome.figures == ("held to 20:00 Europe/Berlin: best hour 20\u201321 "
                               "from 14 engagements")
    assert outcome.fields()["send_time"] == "best"
    assert await pipeline.release_due(outcome.due_ms - 1, lambda _u: state) == []
    released = await pipeline.release_due(outcome.due_ms, lambda _u: state)
    assert [o.status for o in released] == ["delivered"]
    assert [m.trigger_id for m in sender.messages] == [trig.trigger_id]


async def test_the_holdout_share_is_sent_at_once_by_its_hash() -> None:
    cfg = config(holdout=0.5, quiet=False)
    pipeline, _ = pipeline_for(cfg)
    rng = random.Random(9)
    arms = {}
    for i in range(60):
        user = f"h{i}"
        state = opener(user, "UTC", 20, rng, noise=0)
        now = START + 30 * DAY + 9 * HOUR
        outcome = await pipeline.deliver(Trigger("reminder", user, None, now), state, now)
        arms[user] = outcome.send_time
        held_out = bucket(cfg.delivery.send_time.salt, "reminder", user) < 0.5
        assert outcome.send_time == ("holdout" if held_out else "best")
        assert outcome.status == ("delivered" if held_out else "deferred")
    assert 10 < sum(a == "holdout" for a in arms.values()) < 50


async def test_quiet_hours_and_the_age_limit_bound_the_hold() -> None:
    rng = random.Random(11)
    # Opens at 23:00, inside the default quiet hours (22:00-08:00): never chosen,
    # and no other hour stands out, so it goes at once.
    pipeline, _ = pipeline_for(config())
    state = opener("q", "UTC", 23, rng, noise=0)
    now = START + 30 * DAY + 12 * HOUR
    outcome = await pipeline.deliver(Trigger("reminder", "q", None, now), state, now)
    assert (outcome.status, outcome.send_time) == ("delivered", "best")
    # A 20:00 peak 11 hours away, but the message may only be 2 hours old: not held there.
    short, _ = pipeline_for(config(quiet=False, max_age="2h"))
    peak = opener("a", "UTC", 20, rng, noise=0)
    now = START + 30 * DAY + 9 * HOUR
    outcome = await short.deliver(Trigger("reminder", "a", None, now), peak, now)
    assert outcome.status == "delivered"
    # Quiet hours allowed again (and a day of age): held to 20:00.
    wide, _ = pipeline_for(config(quiet=False))
    outcome = await wide.deliver(Trigger("reminder", "a", None, now), peak, now)
    assert outcome.due_ms == START + 30 * DAY + 20 * HOUR


async def test_a_new_user_borrows_the_groups_curve() -> None:
    pipeline, _ = pipeline_for(config(quiet=False))
    rng = random.Random(13)
    now = START + 30 * DAY + 9 * HOUR
    for i in range(4):  # four users of the same (empty-profile) group open at 19:00 UTC
        state = opener(f"g{i}", "UTC", 19, rng, noise=0)
        await pipeline.deliver(Trigger("reminder", f"g{i}", None, now), state, now)
    newcomer = UserState()
    newcomer.profile.update(Event("n", now - HOUR, "view", {"tz": "UTC"}))
    seg = pipeline.selector.segment(newcomer, now)
    teachers = pipeline.selector.segment(opener("x", "UTC", 19, rng, noise=0), now)
    if (seg.style, seg.segment) != (teachers.style, teachers.segment):
        pytest.fail(f"the factory users are not one group: {seg} vs {teachers}")
    outcome = await pipeline.deliver(Trigger("reminder", "n", None, now), newcomer, now)
    assert outcome.status == "deferred"
    assert outcome.due_ms == START + 30 * DAY + 19 * HOUR
    assert "group's curve (learnt from 4 requests)" in outcome.figures


def test_promo_arrivals_are_never_delayed() -> None:
    from triggers.errors import ConfigError

    with pytest.raises(ConfigError, match="never delayed"):
        config(kind="arrival")


async def test_a_journey_send_step_with_a_send_time_is_held() -> None:
    from channels.orders import SendAction

    cfg = load_config_text("""
scenes:
  cart_abandonment: {kind: absence, start: {type: cart}, after: 30m}
strategies:
  journeys:
    nudge:
      entry: {scene: cart_abandonment}
      steps:
        - id: mail
          send: {channel: inbox, content: reactivation_push_1,
                 send_time: {mode: best}}
        - id: again
          send: {channel: inbox, content: reactivation_push_2}
delivery:
  max_age: 48h
  quiet_hours: {enabled: false}
  send_time: {holdout: 0}
""")
    pipeline, _ = pipeline_for(cfg)
    state = opener("j", "UTC", 20, random.Random(17), noise=0)
    now = START + 30 * DAY + 9 * HOUR
    held = await pipeline.deliver_send(
        SendAction("j", "inbox", "reactivation_push_1", "nudge", "mail", "m1", now), state, now)
    assert (held.status, held.reason, held.due_ms) == ("deferred", "send_time",
                                                       START + 30 * DAY + 20 * HOUR)
    plain = await pipeline.deliver_send(
        SendAction("j", "inbox", "reactivation_push_2", "nudge", "again", "m2", now), state, now)
    assert (plain.status, plain.send_time) == ("delivered", None)


def test_check_config_names_the_send_time() -> None:
    from scenetrigger.cli.change.check_config import summary

    text = summary("c.yaml", config(max_delay="5h"))
    assert "send time: best hour within 5h" in text.splitlines()[2]


async def test_a_hold_never_lands_in_quiet_hours_and_is_counted() -> None:
    # A peak at each quiet hour (22:00-08:00 UTC): the hold may go to another
    # hour or none, never into the quiet period; each hold counts one deferral.
    rng = random.Random(23)
    held = 0
    for n, peak in enumerate((22, 23, 0, 1, 2, 3, 4, 5, 6, 7)):
        pipeline, _ = pipeline_for(config())
        state = opener(f"q{n}", "UTC", peak, rng, noise=0)
        now = START + 30 * DAY + 12 * HOUR
        outcome = await pipeline.deliver(Trigger("reminder", f"q{n}", None, now), state, now)
        if outcome.status == "deferred":
            assert outcome.due_ms is not None
            hour = datetime.fromtimestamp(outcome.due_ms / 1000, UTC).hour
            assert 8 <= hour < 22, (peak, hour)
            held += 1
        assert pipeline.policy.deferred == (1 if outcome.status == "deferred" else 0)
    wide, _ = pipeline_for(config(quiet=False))
    state = opener("w", "UTC", 23, rng, noise=0)
    now = START + 30 * DAY + 12 * HOUR
    outcome = await wide.deliver(Trigger("reminder", "w", None, now), state, now)
    assert (outcome.status, outcome.reason) == ("deferred", "send_time")
    assert wide.policy.deferred == 1
    again = opener("w2", "UTC", 23, rng, noise=0)
    second = await wide.deliver(Trigger("reminder", "w2", None, now), again, now)
    assert second.status == "deferred" and wide.policy.deferred == 2
