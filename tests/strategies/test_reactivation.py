"""The shipped reactivation strategy, end to end on a scripted stream with a
fake clock (explicit ``now_ms``; nothing reads the wall clock)."""

from __future__ import annotations

from strategies.actions import EnrolAction, ExitAction, SuppressedAction, TagAction
from strategies.state import BytesJourneyStore
from tests.strategies.helpers import DAY, HOUR, T0, engine, feedback, sends, trigger
from triggers.events import Event


def test_push_then_push_again_then_sms_and_wechat_on_the_clock() -> None:
    eng = engine()
    first = eng.on_trigger(trigger("u1", T0))
    assert isinstance(first[0], EnrolAction) and first[0].strategy == "reactivation"
    assert [(s.channel, s.content_ref, s.ts) for s in sends(first)] == [
        ("push", "reactivation_push_1", T0)]
    assert eng.advance(T0 + 2 * DAY) == []  # due only when the clock passes the deadline
    second = eng.advance(T0 + 2 * DAY + 1)
    assert [(s.channel, s.content_ref, s.ts) for s in sends(second)] == [
        ("push", "reactivation_push_2", T0 + 2 * DAY)]
    third = eng.advance(T0 + 4 * DAY + 1)
    assert [(s.channel, s.ts) for s in sends(third)] == [("sms", T0 + 4 * DAY),
                                                         ("wechat", T0 + 4 * DAY)]
    assert len({s.message_id for s in sends(first + second + third)}) == 4


def test_opened_on_wechat_tags_prefers_wechat_and_wechat_goes_first_next_time() -> None:
    eng = engine()
    eng.on_trigger(trigger("u1", T0))
    eng.advance(T0 + 2 * DAY + 1)
    last = sends(eng.advance(T0 + 4 * DAY + 1))
    wechat = next(s for s in last if s.channel == "wechat")
    opened = eng.on_event(feedback("u1", T0 + 5 * DAY, "opened", wechat))
    assert [a for a in opened if isinstance(a, TagAction)] == [
        TagAction("u1", "prefers_wechat", True, "reactivation", "tag_wechat", T0 + 5 * DAY)]
    assert any(isinstance(a, ExitAction) and a.reason == "exit" for a in opened)
    assert "prefers_wechat" in eng.tags_of("u1")
    assert eng.advance(T0 + 12 * DAY) == []  # nothing left to do: churn branch not taken
    # re-entering (after reenter_after 7d): the first channel is now WeChat
    again = eng.on_trigger(trigger("u1", T0 + 13 * DAY))
    assert [(s.channel, s.content_ref) for s in sends(again)] == [
        ("wechat", "reactivation_push_1")]
    nxt = sends(eng.advance(T0 + 15 * DAY + 1))
    assert [s.channel for s in nxt] == ["wechat"]  # push_2 too
    final = sends(eng.advance(T0 + 17 * DAY + 1))
    assert [s.channel for s in final] == ["wechat", "sms"]  # WeChat first, SMS kept


def test_nothing_opened_tags_churned_and_enrols_in_winback() -> None:
    eng = engine()
    eng.on_trigger(trigger("u2", T0, "cart_abandonment"))
    eng.advance(T0 + 4 * DAY + 1)
    assert eng.advance(T0 + 6 * DAY) == []
    churn = eng.advance(T0 + 6 * DAY + 1)
    tags = [(a.tag, a.add) for a in churn if isinstance(a, TagAction)]
    assert tags == [("churned", True)]
    enrols = [a for a in churn if isinstance(a, EnrolAction)]
    assert [(e.strategy, e.via, e.ts) for e in enrols] == [
        ("winback", "strategy:reactivation", T0 + 6 * DAY)]
    assert eng.position("u2", "reactivation") is None
    assert eng.position("u2", "winback") == (1, "wait_week")
    # churned users do not re-enter reactivation; winback mails after a week
    offer = sends(eng.advance(T0 + 13 * DAY + 1))
    assert [(s.channel, s.content_ref) for s in offer] == [("email", "winback_offer")]
    blocked = eng.on_trigger(trigger("u2", T0 + 13 * DAY + HOUR))
    assert [(a.strategy, a.reason) for a in blocked if isinstance(a, SuppressedAction)] == [
        ("reactivation", "entry_condition")]
    back = eng.on_event(feedback("u2", T0 + 14 * DAY, "purchase"))
    assert [(a.tag, a.add) for a in back if isinstance(a, TagAction)] == [("churned", False)]


def test_an_open_ends_the_journey_and_an_sms_open_sets_no_preference() -> None:
    eng = engine()
    push = sends(eng.on_trigger(trigger("a", T0)))[0]
    done = eng.on_event(feedback("a", T0 + 2 * DAY, "opened", push))  # at the deadline: counts
    assert [a.kind for a in done] == ["exit"]
    assert eng.advance(T0 + 10 * DAY) == []
    eng = engine()
    eng.on_trigger(trigger("b", T0))
    assert [s.channel for s in sends(eng.advance(T0 + 4 * DAY + 1))] == ["push", "sms", "wechat"]
    assert eng.advance(T0 + 4 * DAY + 1) == []  # nothing repeats
    out = eng.on_event(feedback("b", T0 + 4 * DAY + HOUR, "opened", channel="sms"))
    assert [a.kind for a in out] == ["exit"] and eng.tags_of("b") == frozenset()


def test_feedback_for_another_strategy_or_an_old_open_does_not_resolve_a_branch() -> None:
    eng = engine()
    eng.on_trigger(trigger("u", T0))
    other = feedback("u", T0 + HOUR, "opened")
    other_fields = dict(other.fields, strategy="welcome")
    assert eng.on_event(Event("u", T0 + HOUR, "opened", other_fields)) == []
    stale = Event("u", T0 + HOUR, "opened", {"type": "opened", "message_id": "nope"})
    assert eng.on_event(stale) == []
    assert eng.position("u", "reactivation") == (1, "wait_open_1")


def test_in_progress_users_are_not_enrolled_twice() -> None:
    eng = engine()
    eng.on_trigger(trigger("u", T0))
    again = eng.on_trigger(trigger("u", T0 + HOUR))
    assert [(a.kind, getattr(a, "reason", None)) for a in again] == [("suppressed", "in_progress")]


def test_positions_survive_a_restart_in_the_middle_of_a_wait() -> None:
    table: dict[str, bytes] = {}
    eng = engine(store=BytesJourneyStore(table))
    eng.on_trigger(trigger("u", T0))
    eng.on_trigger(trigger("v", T0 + HOUR))
    assert eng.advance(T0 + DAY) == []
    # a new process: fresh registry from the same config, state from the table
    fresh = engine(store=BytesJourneyStore(table))
    assert fresh.rebuild_timers() == 2
    assert fresh.next_deadline() == T0 + 2 * DAY
    out = sends(fresh.advance(T0 + 2 * DAY + HOUR + 1))
    assert [(s.user_id, s.content_ref, s.ts) for s in out] == [
        ("u", "reactivation_push_2", T0 + 2 * DAY),
        ("v", "reactivation_push_2", T0 + 2 * DAY + HOUR)]
