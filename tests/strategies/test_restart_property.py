"""Property: a journey engine restarted from its encoded state at any point
emits exactly the actions of one that never stopped (random scripted streams
of triggers, opens on random channels, purchases and clock advances)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.actions import Action, SendAction
from strategies.journeys import JourneyEngine
from strategies.model import Registry
from strategies.state import BytesJourneyStore
from tests.strategies.helpers import DAY, T0, shipped, trigger
from triggers.events import Event

USERS = ("u1", "u2", "u3")
MODELS = shipped()

op = st.tuples(
    st.sampled_from(("trigger", "open", "purchase", "advance")),
    st.sampled_from(USERS),
    st.integers(min_value=0, max_value=3 * DAY),  # time step
    st.sampled_from(("push", "sms", "wechat", "email")),
    st.booleans(),  # restart before this op
)


def _apply(engine: JourneyEngine, kind: str, user: str, ts: int, channel: str,
           last_sends: dict[str, SendAction]) -> list[Action]:
    if kind == "trigger":
        return engine.on_trigger(trigger(user, ts))
    if kind == "advance":
        return engine.advance(ts)
    fields: dict[str, Any] = {"type": "opened" if kind == "open" else "purchase", "ts": ts}
    if kind == "open":
        fields["channel"] = channel
        sent = last_sends.get(f"{user}|{channel}")
        if sent is not None:
            fields["message_id"] = sent.message_id
    return engine.on_event(Event(user, ts, str(fields["type"]), fields))


def _run(ops: list[tuple[str, str, int, str, bool]], restarts: bool) -> list[Action]:
    table: dict[str, bytes] = {}
    engine = JourneyEngine(Registry(MODELS), BytesJourneyStore(table))
    out: list[Action] = []
    last: dict[str, SendAction] = {}
    ts = T0
    for kind, user, step, channel, restart in ops:
        ts += step
        if restarts and restart:
            engine = JourneyEngine(Registry(MODELS), BytesJourneyStore(table))
            engine.rebuild_timers()
        actions = _apply(engine, kind, user, ts, channel, last)
        for a in actions:
            if isinstance(a, SendAction):
                last[f"{a.user_id}|{a.channel}"] = a
        out += actions
    out += engine.advance(ts + 30 * DAY)
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(op, min_size=1, max_size=40))
def test_restarting_anywhere_changes_nothing(ops: list[tuple[str, str, int, str, bool]]) -> None:
    assert _run(ops, restarts=True) == _run(ops, restarts=False)


def test_the_property_sees_whole_journeys() -> None:
    """A fixed stream through the same harness reaches the churn branch, so
    the property above exercises waits, branches, tags and enrolment."""
    ops = [("trigger", "u1", 0, "push", False), ("advance", "u1", 7 * DAY, "push", True)]
    kinds = [a.kind for a in _run(ops, restarts=True)]
    assert kinds.count("send") == 5 and "tag" in kinds and kinds.count("enrol") == 2
