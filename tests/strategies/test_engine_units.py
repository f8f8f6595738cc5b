"""Smaller rules of the journey engine: segment entries, control runs,
channel order, score steps, state decoding."""

from __future__ import annotations

import pytest

from config.strategy_models import ControlModel, parse_strategies
from strategies.actions import EnrolAction, ScoreAction, SendAction, UserContext
from strategies.journeys import JourneyEngine, order_channels
from strategies.model import Registry
from strategies.state import JourneyUser, Run
from tests.strategies.helpers import DAY, T0, engine, sends, shipped, trigger
from triggers.errors import StateDecodeError

VIP = parse_strategies({
    "vip_care": {
        "entry": {"segment": {"in": ["champion", "loyal"]}, "tags": {"none": ["opted_out"]}},
        "steps": [
            {"score": 15},
            {"branch": {"within": "1d", "when": [{"tag": "vip", "goto": "vip_mail"}],
                        "else": "plain"}},
            {"id": "plain", "send": {"channel": "email", "content": "thanks"}},
            {"exit": True},
            {"id": "vip_mail", "send": {"channels": ["email", "sms"], "content": "vip"}},
        ],
    }})


def test_segment_entries_need_the_segment_and_tags() -> None:
    eng = JourneyEngine(Registry(VIP))
    assert eng.on_user("a", UserContext(segment="promising"), T0) == []
    assert eng.on_user("b", UserContext(frozenset({"opted_out"}), "loyal"), T0) == []
    out = eng.on_user("c", UserContext(segment="loyal"), T0)
    assert [type(a) for a in out] == [EnrolAction, ScoreAction]
    assert eng.on_user("c", UserContext(segment="loyal"), T0 + 1) == []  # already inside
    assert [s.content_ref for s in sends(eng.advance(T0 + DAY + 1))] == ["thanks"]


def test_a_tag_case_decides_at_once() -> None:
    eng = JourneyEngine(Registry(VIP))
    out = eng.on_user("v", UserContext(frozenset({"vip"}), "champion"), T0)
    assert [(s.channel, s.content_ref) for s in sends(out)] == [("email", "vip"), ("sms", "vip")]
    assert eng.position("v", "vip_care") is None


def test_control_runs_follow_the_steps_but_send_nothing() -> None:
    control = ControlModel(share=0.5)
    eng = engine(control=control)
    users = [f"user{i}" for i in range(200)]
    enrolled = {}
    for u in users:
        out = eng.on_trigger(trigger(u, T0))
        enrol = next(a for a in out if isinstance(a, EnrolAction))
        enrolled[u] = enrol.control
        assert (len(sends(out)) == 0) == enrol.control
    assert 60 < sum(enrolled.values()) < 140
    later = eng.advance(T0 + 6 * DAY + 1)
    assert {s.user_id for s in sends(later)} == {u for u, c in enrolled.items() if not c}
    churned = {a.user_id for a in later if a.kind == "tag"}
    assert churned == set(users)  # control users churn too: no message, no open


def test_channel_order_puts_the_preferred_channel_first() -> None:
    assert order_channels(("push",), "wechat") == ("wechat",)
    assert order_channels(("sms", "wechat"), "wechat") == ("wechat", "sms")
    assert order_channels(("sms", "email"), "wechat") == ("wechat", "email")
    assert order_channels(("sms", "email"), None) == ("sms", "email")


def test_respect_preference_false_keeps_the_configured_channel() -> None:
    models = parse_strategies({"s": {"entry": {"scene": "x"}, "steps": [
        {"send": {"channel": "sms", "content": "c", "respect_preference": False}}]}})
    eng = JourneyEngine(Registry(models))
    out = eng.on_trigger(trigger("u", T0, "x"), UserContext(frozenset({"prefers_wechat"})))
    assert [s.channel for s in out if isinstance(s, SendAction)] == ["sms"]


def test_state_round_trip_and_bad_state() -> None:
    user = JourneyUser()
    user.tags = {"churned"}
    user.opens = {"wechat": 2}
    run = Run(3, "abc", T0, "cart_abandonment", "tid", True)
    run.step, run.step_id, run.due_ms, run.seq, run.sent = 2, "w", T0 + DAY, 7, ["m1"]
    user.runs["r"] = run
    user.exits["old"] = T0
    back = JourneyUser.decode(user.encode())
    assert back.encode() == user.encode()
    assert back.runs["r"].control and back.runs["r"].due_ms == T0 + DAY
    for bad in (b"not json", b"[2, [], {}, {}, {}]", b"[1, [], {}, {\"r\": [1]}, {}]"):
        with pytest.raises(StateDecodeError):
            JourneyUser.decode(bad)


def test_registry_apply_removed_strategy_keeps_users_inside() -> None:
    reg = Registry(shipped())
    eng = JourneyEngine(reg)
    eng.on_trigger(trigger("u", T0))
    reg.apply({"winback": shipped()["winback"]})
    assert eng.on_trigger(trigger("v", T0 + 1)) == []  # no longer takes entrants
    assert [s.content_ref for s in sends(eng.advance(T0 + 2 * DAY + 1))] == [
        "reactivation_push_2"]


def test_service_reconfigure_versions_and_rejects() -> None:
    from config.loader import load_config_text
    from strategies.service import JourneyService
    from strategies.store import MemoryTagStore
    from triggers.errors import ConfigError

    base = "scenes: {x: {kind: arrival, when: {type: view}}}\n"
    good = base + "strategies: {journeys: {s: {entry: {scene: x}, steps: [{wait: 1d}]}}}\n"
    edited = base + "strategies: {journeys: {s: {entry: {scene: x}, steps: [{wait: 2d}]}}}\n"
    bad = base + "strategies: {journeys: {s: {entry: {scene: y}, steps: [{wait: 2d}]}}}\n"

    async def send(_action: object) -> None:
        return None

    service = JourneyService(load_config_text(good), None, MemoryTagStore(), send)
    assert service.reconfigure(load_config_text(edited)) == {"s": 2}
    with pytest.raises(ConfigError, match=r"strategy 's', field 'entry\.scene': no scene named 'y'"):
        service.reconfigure(load_config_text(bad))
    current = service.registry.current("s")
    assert current is not None and current.version == 2


def test_a_user_who_opted_out_of_every_channel_of_a_journey_leaves_it() -> None:
    from strategies.actions import ExitAction
    from tests.strategies.helpers import feedback

    used = {c for m in shipped().values() for s in m.steps
            if s.send is not None for c in s.send.channel_list()}
    eng = engine(channel_types={"app": "push"})
    eng.on_trigger(trigger("u", T0))
    assert eng.store.get("u") is not None and eng.store.get("u").runs  # type: ignore[union-attr]
    names = sorted(used)
    for channel in names[:-1]:  # one channel left: the journey can still reach the user
        assert not [a for a in eng.on_event(feedback("u", T0 + 1, "unsubscribed",
                                                     channel=channel))
                    if isinstance(a, ExitAction)]
    left = [a for a in eng.on_event(feedback("u", T0 + 2, "unsubscribed", channel=names[-1]))
            if isinstance(a, ExitAction)]
    assert left and {a.reason for a in left} == {"opted_out"}
    assert not eng.store.get("u").runs  # type: ignore[union-attr]
