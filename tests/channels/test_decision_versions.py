"""One decision model, versioned: every kind any process writes reads back
(the worker's fires and refusals, sends and suppressions, journey steps,
feedback, consent changes, erasures), an older version and a newer one too,
and ``explain`` says when and how a user unsubscribed and what it refused."""

from __future__ import annotations

import orjson
import pytest

from channels.feedback.decisions import (
    CONSENT,
    VERSION,
    DecisionRecord,
    erasure_record,
    feedback_record,
    refusal_record,
    trigger_record,
)
from channels.feedback.events import FeedbackEvent
from channels.orders import SendAction
from scenetrigger.ops.explain import Timeline
from strategies.actions import EnrolAction
from strategies.decisions import journey_record
from triggers.events import Refusal, Trigger

T = 1_780_000_000_000


def every_kind() -> list[DecisionRecord]:
    trig = Trigger("promo_arrival", "ann", "/promo/1", T)
    return [
        trigger_record(trig, "arrival", "first arrival at /promo/1"),
        refusal_record(Refusal("promo_arrival", "ann", "/promo/2", T + 1, "tags_all {vip}", ())),
        DecisionRecord(T + 2, "ann", trig.trigger_id, "promo_arrival", "delivered",
                       channel="mail", variant="fallback", message_id="m1"),
        DecisionRecord(T + 3, "ann", "t2", "promo_arrival", "suppressed", "cap_day",
                       "3 of 3 sent today"),
        journey_record(EnrolAction("ann", "winback", 1, "segment:lapsed", T + 4)),
        journey_record(SendAction("ann", "mail", "winback_1", "winback", "s1", "jm1", T + 5)),
        feedback_record(FeedbackEvent("opened", "ann", T + 6, "m1", "mail", "promo_arrival")),
        feedback_record(FeedbackEvent("clicked", "ann", T + 7, "m1", "mail", "promo_arrival",
                                      "https://shop.example/p/1")),
        feedback_record(FeedbackEvent("unsubscribed", "ann", T + 8, "", "email", "",
                                      "marketing", source="one_click")),
        feedback_record(FeedbackEvent("unsubscribed", "ann", T + 9, "", "sms", "",
                                      "marketing", source="sms_reply")),
        erasure_record("ann", T + 10, "serve"),
    ]


def test_every_kind_round_trips_with_the_version() -> None:
    for record in every_kind():
        wire = record.encode()
        assert orjson.loads(wire)["v"] == VERSION == 2
        assert DecisionRecord.decode(wire) == record, wire
        assert record.trigger_id and record.scene and record.outcome, record


def test_a_consent_change_says_channel_purpose_and_source() -> None:
    record = feedback_record(FeedbackEvent("unsubscribed", "ann", T, "", "email", "",
                                           "marketing", source="unsubscribe_link"))
    assert (record.scene, record.channel, record.purpose, record.source) == \
        (CONSENT, "email", "marketing", "unsubscribe_link")
    assert record.trigger_id == f"consent:email:{T}"


def test_version_1_records_of_serve_still_read() -> None:
    # What serve wrote for an unsubscribe before (no trigger_id, no scene):
    # the reader raised TypeError and explain crashed on the user.
    old = b'{"ts":1780000000000,"user_id":"ann","outcome":"unsubscribed",' \
          b'"figures":"message : marketing","channel":"email"}'
    record = DecisionRecord.decode(old)
    assert (record.v, record.trigger_id, record.scene, record.outcome) == \
        (1, "", "", "unsubscribed")


def test_a_newer_version_reads_its_known_fields() -> None:
    newer = orjson.dumps({"v": 3, "ts": T, "user_id": "ann", "trigger_id": "t", "scene": "s",
                          "outcome": "delivered", "a_field_of_v3": {"x": 1}})
    record = DecisionRecord.decode(newer)
    assert (record.v, record.outcome, record.scene) == (3, "delivered", "s")


@pytest.mark.parametrize("wire", [b"[]", b'{"ts": "1", "user_id": "a", "outcome": "x"}',
                                  b'{"user_id": "a", "outcome": "x"}',
                                  b'{"ts": 1, "user_id": "a"}',
                                  b'{"ts": true, "user_id": "a", "outcome": "x"}'])
def test_a_record_that_is_none_is_a_value_error(wire: bytes) -> None:
    with pytest.raises(ValueError, match="decision record"):
        DecisionRecord.decode(wire)


def test_explain_says_when_and_how_and_what_it_refused() -> None:
    unsub = feedback_record(FeedbackEvent("unsubscribed", "ann", T, "", "email", "",
                                          "marketing", source="one_click"))
    before = DecisionRecord(T - 5, "ann", "t0", "promo_arrival", "suppressed", "unsubscribed",
                            "mail: unsubscribed")  # another change's: not counted
    later = [DecisionRecord(T + n, "ann", f"t{n}", "promo_arrival", "suppressed",
                            "unsubscribed", "mail: unsubscribed") for n in (1, 2)]
    sent = DecisionRecord(T + 3, "ann", "t3", "promo_arrival", "delivered", channel="sms")
    timeline = Timeline("ann", decisions=[before, unsub, *later, sent])
    text = timeline.render()
    assert ("unsubscribed from email (marketing) at 2026-05-28 20:26:40 through a one-click "
            "POST (RFC 8058); 2 later message(s) refused for it (unsubscribed)") in text, text
    assert "consent  unsubscribed email (marketing) through a one-click POST" in text
    [change] = timeline.to_dict()["consent"]
    assert change == {"ts": T, "outcome": "unsubscribed", "channel": "email",
                      "purpose": "marketing", "source": "one_click",
                      "how": "a one-click POST (RFC 8058)", "refused_after": 2}


def test_the_console_lists_and_looks_up_every_kind() -> None:
    from config.loader import load_config
    from scenetrigger.console.sources import _decode
    from scenetrigger.console.state import ConsoleState

    state = ConsoleState(load_config())
    names = ("e", "t", "d", "a")
    records = [*every_kind()[:-1], DecisionRecord.decode(
        b'{"ts":1780000000011,"user_id":"ann","outcome":"unsubscribed","channel":"email"}')]
    for record in records:
        [read] = _decode("d", None, record.encode(), names, state.config, None, None, None)
        assert read == record
        state.write(read)
    assert len(state.recent_decisions()) == len(records)
    timeline = state.timeline("ann")()
    assert len(timeline.decisions) == len(records)
    assert "unsubscribed from sms (marketing)" in timeline.render()
