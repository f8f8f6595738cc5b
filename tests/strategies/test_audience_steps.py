"""Paid media in journeys (issue 22, point 3): ``audience: {add: NAME}`` and
``{remove: NAME}`` steps produce the audience records the ``audiences:``
section's tracker writes (triggers/audiences/record.py), reason ``journey``:
an unresponsive user moves to retargeting after the owned channels fail, a
buyer leaves it the moment they buy (docs/ads.md, "Journey steps")."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from config.loader import load_config_text
from config.strategy_models import ControlModel
from strategies.actions import AudienceAction, EnrolAction
from strategies.bridge import KafkaAudienceSender
from strategies.embedded import JourneySubscriber
from strategies.journeys import JourneyEngine
from strategies.model import Registry
from triggers.audiences.record import AudienceChange, decode_change
from triggers.errors import ConfigError
from triggers.events import Event, Trigger

T0 = 1_700_000_000_000
DAY = 86_400_000
CONFIG = """
scenes:
  cart_abandonment: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
audiences:
  retarget: {journey: true}
strategies:
  journeys:
    winback:
      entry: {scene: cart_abandonment}
      steps:
        - send: {channel: email, content: winback_offer}
        - branch: {within: 1d, when: [{event: purchased, goto: exit}]}
        - audience: {add: retarget}
        - branch: {within: 7d, when: [{event: purchased, goto: bought}], else: exit}
        - id: bought
          audience: {remove: retarget}
"""


def journeys(control: ControlModel | None = None) -> JourneyEngine:
    config = load_config_text(CONFIG)
    return JourneyEngine(Registry(config.strategies.all_journeys(),
                                  scenes=frozenset({"cart_abandonment"})), control=control)


def changes(actions: list[Any]) -> list[AudienceChange]:
    return [a.change() for a in actions if isinstance(a, AudienceAction)]


def purchase(user: str, ts: int) -> Event:
    return Event(user, ts, "purchase", {"user_id": user, "ts": ts, "type": "purchase"})


def test_an_unresponsive_user_enters_retargeting_and_leaves_when_buying() -> None:
    eng = journeys()
    assert changes(eng.on_trigger(Trigger("cart_abandonment", "u", None, T0))) == []
    assert changes(eng.advance(T0 + DAY)) == []  # the branch still waits at its deadline
    entered = changes(eng.advance(T0 + DAY + 1))
    assert entered == [AudienceChange("retarget", "u", "enter", (T0 + DAY) / 1000, "journey")]
    left = changes(eng.on_event(purchase("u", T0 + 2 * DAY)))
    assert left == [AudienceChange("retarget", "u", "exit", (T0 + 2 * DAY) / 1000, "journey")]
    # the same wire form as the tracker's records: key audience|user_id
    assert left[0].key == b"retarget|u"


def test_a_buyer_within_the_first_day_never_enters() -> None:
    eng = journeys()
    eng.on_trigger(Trigger("cart_abandonment", "b", None, T0))
    assert changes(eng.on_event(purchase("b", T0 + 3_600_000))) == []
    assert changes(eng.advance(T0 + 30 * DAY)) == []


def test_the_control_group_is_never_synced() -> None:
    eng = journeys(ControlModel(share=0.9))
    control = set()
    for user in [f"user{i}" for i in range(40)]:
        for action in eng.on_trigger(Trigger("cart_abandonment", user, None, T0)):
            if isinstance(action, EnrolAction) and action.control:
                control.add(action.user_id)
    entered = {c.user_id for c in changes(eng.advance(T0 + DAY + 1))}
    assert entered and control  # some of each at a 90 % share
    assert len(entered) + len(control) == 40 and not entered & control


def test_the_embedded_runtime_hears_the_steps() -> None:
    config = load_config_text(CONFIG)
    heard: list[AudienceChange] = []
    sub = JourneySubscriber(config, lambda _a: None, on_audience=heard.append)

    class Record:
        trigger = Trigger("cart_abandonment", "u", None, T0)
        fired_ms = T0
        via = "timer"

    asyncio.run(sub(Record()))
    asyncio.run(sub.tick(T0 + DAY + 1))
    assert heard == [AudienceChange("retarget", "u", "enter", (T0 + DAY) / 1000, "journey")]
    assert sub.snapshot()["counts"]["audience +retarget"] == 1


def test_the_kafka_sender_writes_the_record_under_its_key() -> None:
    sent: list[tuple[str, bytes, bytes]] = []

    class Producer:  # the aiokafka producer's send_and_wait, in memory
        async def send_and_wait(self, topic: str, *, key: bytes, value: bytes) -> None:
            sent.append((topic, key, value))

    change = AudienceChange.at("retarget", "u", "enter", T0, "journey")
    asyncio.run(KafkaAudienceSender(Producer(), "p.audiences")(change))
    ((topic, key, value),) = sent
    assert (topic, key) == ("p.audiences", b"retarget|u")
    assert decode_change(value) == change
    assert orjson.loads(value)["ts"] == T0 / 1000


@pytest.mark.parametrize(("step", "message"), [
    ("{add: retargt}", "'retargt': no journey audience of that name (did you mean 'retarget'?)"),
    ("{}", "an audience step needs 'add' and/or 'remove'"),
    ("{add: retarget, remove: retarget}", "adds and removes 'retarget'"),
])
def test_a_bad_step_is_refused_with_its_place(step: str, message: str) -> None:
    text = CONFIG.replace("audience: {add: retarget}", f"audience: {step}")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "j.yaml")
    assert any(p.startswith("j.yaml:") and message in p for p in caught.value.problems), \
        caught.value.problems


def test_a_step_on_a_condition_audience_is_refused() -> None:
    text = CONFIG.replace("retarget: {journey: true}",
                          "retarget: {purchase: {within: 1d}}")
    with pytest.raises(ConfigError, match="has conditions"):
        load_config_text(text)


REPEATED = """
scenes:
  cart_abandonment: {kind: absence, start: {type: cart}, cancel: {type: purchase}, after: 30m}
audiences:
  retarget: {journey: true}
strategies:
  journeys:
    twice:
      entry: {scene: cart_abandonment}
      steps:
        - audience: {add: retarget}
        - wait: 1h
        - audience: {add: retarget}
        - audience: {remove: retarget}
        - wait: 1h
        - audience: {remove: retarget}
    also:
      entry: {scene: cart_abandonment}
      steps:
        - wait: 30m
        - audience: {add: retarget}
"""


def test_a_step_writes_only_what_changes_the_membership() -> None:
    """Idempotent steps: adding a user already in (by this journey or another)
    or removing one not in writes nothing; the membership is kept in the
    journey state (its byte encoding: a restarted host knows it too)."""
    from strategies.state import BytesJourneyStore, JourneyUser

    config = load_config_text(REPEATED)
    stored: dict[str, bytes] = {}
    eng = JourneyEngine(Registry(config.strategies.all_journeys(),
                                 scenes=frozenset({"cart_abandonment"})),
                        store=BytesJourneyStore(stored))
    got = changes(eng.on_trigger(Trigger("cart_abandonment", "u", None, T0)))
    assert got == [AudienceChange.at("retarget", "u", "enter", T0, "journey")]
    assert JourneyUser.decode(stored["u"]).audiences == {"retarget"}
    assert changes(eng.advance(T0 + 1_800_001)) == []  # "also" adds: already in
    # "twice" adds again (nothing), then removes (the exit), then waits
    got = changes(eng.advance(T0 + 3_600_001))
    assert got == [AudienceChange.at("retarget", "u", "exit", T0 + 3_600_000, "journey")]
    assert JourneyUser.decode(stored["u"]).audiences == set()
    assert changes(eng.advance(T0 + 7_200_001)) == []  # removing one not in: nothing


def test_journey_state_without_audiences_encodes_as_before() -> None:
    from strategies.state import JourneyUser

    user = JourneyUser()
    user.tags = {"vip"}
    assert orjson.loads(user.encode()) == [1, ["vip"], {}, {}, {}]
    user.audiences = {"b", "a"}
    assert orjson.loads(user.encode())[-1] == ["a", "b"]
    assert JourneyUser.decode(user.encode()).audiences == {"a", "b"}


def test_a_state_from_before_memberships_were_kept_still_removes() -> None:
    """A journey state written before the audiences were kept (five fields)
    may belong to a user an earlier step added: a remove must still be
    written (else a buyer stays in retargeting); an add is written too, and
    after it only the audiences it knows of are skipped."""
    from strategies.state import MAYBE_OTHERS, BytesJourneyStore, JourneyUser

    config = load_config_text(REPEATED)
    old = JourneyUser()
    stored = {"u": orjson.dumps(orjson.loads(old.encode())[:5])}
    assert JourneyUser.decode(stored["u"]).audiences is None
    eng = JourneyEngine(Registry(config.strategies.all_journeys(),
                                 scenes=frozenset({"cart_abandonment"})),
                        store=BytesJourneyStore(stored))
    eng.on_trigger(Trigger("cart_abandonment", "u", None, T0))
    assert JourneyUser.decode(stored["u"]).audiences == {MAYBE_OTHERS, "retarget"}
    eng.advance(T0 + 3_600_001)  # "twice": the add is skipped, the remove written
    got = changes(eng.advance(T0 + 7_200_001))  # removing again: may be in from before
    assert got == [AudienceChange.at("retarget", "u", "exit", T0 + 7_200_000, "journey")]
    new = JourneyUser()
    assert orjson.loads(new.encode()) == [1, [], {}, {}, {}]  # no step: five fields
    new.audience_steps = True
    assert orjson.loads(new.encode())[-1] == []  # after a step an empty set is known
