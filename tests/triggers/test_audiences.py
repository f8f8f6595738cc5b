"""Audience membership (triggers/audiences): the record contract, the
conditions and the tracker, on a fake clock (docs/ads.md)."""

from __future__ import annotations

import orjson
import pytest

from config.loader import validate_config
from triggers.audiences.record import (
    AudienceChange,
    AudienceRecordError,
    audience_line,
    change_key,
    decode_change,
    encode_change,
)
from triggers.audiences.rules import decayed
from triggers.events import Event
from triggers.host import EngineHost
from triggers.state import BytesStore, UserState

H = 3_600_000
T0 = 1_700_000_000_000

CONFIG = {
    "scenes": {"viewed": {"kind": "arrival", "when": {"type": "view"}, "per": "product_id"}},
    "audiences": {
        "viewed_not_bought": {"fired": {"scene": "viewed", "within": "2h"},
                              "purchase": {"none_within": "2h"}},
        "buyers": {"purchase": {"within": "1h"}},
        "warm": {"lead_score": {"min": 10}},
        "germans": {"locale": "de"},
    },
    "strategies": {"scoring": {"points": {"view": 8, "cart": 4}, "half_life": "1h"}},
}


def host_of(config: dict[str, object] | None = None, store: object = None) -> EngineHost:
    app = validate_config(config or CONFIG)
    host = EngineHost(app.scene_list(), app.engine.limits(), store=store)  # type: ignore[arg-type]
    host.audiences = app.audience_tracker(host.engine.store)
    return host


def ev(user: str, ts: int, etype: str, **fields: object) -> Event:
    return Event(user, ts, etype, {"user_id": user, "ts": ts, "type": etype, **fields})


def changes(host: EngineHost) -> list[tuple[str, str, str, int, str]]:
    assert host.audiences is not None
    return [(c.audience, c.user_id, c.op, round(c.ts * 1000), c.reason)
            for c in host.audiences.take()]


def test_the_record_is_the_documented_wire_form() -> None:
    change = AudienceChange.at("retarget", "u|1", "enter", 1_500, "journey")
    assert change.key == b"retarget|u|1" == change_key("retarget", "u|1")
    assert orjson.loads(encode_change(change)) == {
        "audience": "retarget", "user_id": "u|1", "op": "enter", "ts": 1.5, "reason": "journey"}
    line = audience_line(change)
    assert line.endswith(b"\n") and line.startswith(b'{"kind":"audience",')
    assert decode_change(line) == decode_change(encode_change(change)) == change


@pytest.mark.parametrize("value", [
    b"[]", b"{", b'{"audience":"a","user_id":"u","op":"join","ts":1,"reason":"x"}',
    b'{"audience":"a","user_id":"u","op":"enter","ts":"1","reason":"x"}',
    b'{"audience":"","user_id":"u","op":"enter","ts":1,"reason":"x"}',
    b'{"kind":"trigger","audience":"a","user_id":"u","op":"enter","ts":1,"reason":"x"}',
    b'{"audience":"a","user_id":"u","op":"enter","ts":1,"reason":"x","extra":1}',
])
def test_a_bad_record_is_refused(value: bytes) -> None:
    with pytest.raises(AudienceRecordError):
        decode_change(value)


def test_a_window_that_runs_out_is_an_exit_at_its_exact_time() -> None:
    host = host_of()
    host.take(ev("u", T0, "view", product_id="p"))
    assert ("viewed_not_bought", "u", "enter", T0, "condition") in changes(host)
    host.advance(T0 + 2 * H)  # due when the clock is strictly past it
    assert changes(host) == []
    host.advance(T0 + 2 * H + 1)
    assert changes(host) == [("viewed_not_bought", "u", "exit", T0 + 2 * H, "expired")]


def test_a_purchase_removes_the_user_at_the_purchase() -> None:
    host = host_of()
    host.take(ev("u", T0, "view", product_id="p"))
    changes(host)
    host.take(ev("u", T0 + 600_000, "purchase", product_id="p"))
    assert changes(host) == [
        ("viewed_not_bought", "u", "exit", T0 + 600_000, "purchase"),
        ("buyers", "u", "enter", T0 + 600_000, "condition")]
    host.advance(T0 + 600_000 + H + 1)
    assert changes(host) == [("buyers", "u", "exit", T0 + 600_000 + H, "expired")]
    host.advance(T0 + 10 * H)  # the view's window ended before the purchase's: no re-entry
    assert changes(host) == []


def test_a_decaying_lead_score_leaves_at_the_first_ms_below_the_minimum() -> None:
    host = host_of()
    host.take(ev("u", T0, "view", product_id="p"))
    host.take(ev("u", T0 + 1000, "cart"))
    got = changes(host)
    assert ("warm", "u", "enter", T0 + 1000, "condition") in got
    value = decayed(8.0, T0, T0 + 1000, H) + 4.0  # the model's points, decayed to the cart
    host.advance(T0 + 100 * H)
    (exit_,) = [c for c in changes(host) if c[0] == "warm"]
    at = exit_[3]
    assert exit_[2:] == ("exit", at, "expired")
    assert decayed(value, T0 + 1000, at, H) < 10 <= decayed(value, T0 + 1000, at - 1, H)


def test_locale_matches_a_sub_tag_case_insensitively() -> None:
    host = host_of()
    host.take(ev("u", T0, "page", locale="DE-at"))
    host.take(ev("v", T0, "page", locale="den"))
    assert [c for c in changes(host) if c[0] == "germans"] == [
        ("germans", "u", "enter", T0, "condition")]


def test_a_restarted_host_re_arms_the_exit_from_stored_state() -> None:
    table: dict[str, bytes] = {}
    first = host_of(store=BytesStore(table))
    first.take(ev("u", T0, "view", product_id="p"))
    assert changes(first)
    assert orjson.loads(table["u"])[0] == 3  # the audiences' data: state version 3
    second = host_of(store=BytesStore(table))
    assert second.audiences is not None
    assert second.audiences.rebuild() == 1
    assert second.audiences.next_deadline() == T0 + 2 * H
    second.advance(T0 + 3 * H)
    assert changes(second) == [("viewed_not_bought", "u", "exit", T0 + 2 * H, "expired")]


def test_without_audiences_the_state_encoding_is_unchanged() -> None:
    state = UserState()
    state.max_ts = T0
    assert orjson.loads(state.encode())[0] == 2
    assert UserState.decode(state.encode()).audience is None


SEGMENTS = {
    "scenes": {"viewed": {"kind": "arrival", "when": {"type": "view"}}},
    "content": {"segments": {"lapse_after": "10d"}},
    "audiences": {"active_buyers": {"segment": {"in": ["promising", "loyal", "champion"]}},
                  "lapsed_weekday": {"segment": "new_or_lapsed", "tags": {"all": ["weekday"]}}},
}


def test_a_lapsing_segment_is_an_exit_at_the_first_ms_it_lapses() -> None:
    host = host_of(SEGMENTS)
    host.take(ev("u", T0, "purchase", price=5))
    assert ("active_buyers", "u", "enter", T0, "condition") in changes(host)
    lapse = T0 + 10 * 86_400_000 + 1  # lapsed once more than lapse_after has passed
    host.advance(lapse)
    assert changes(host) == []
    host.advance(lapse + 1)
    assert changes(host) == [("active_buyers", "u", "exit", lapse, "expired")]


def test_an_identified_id_leaves_its_audiences_and_the_known_user_is_evaluated() -> None:
    host = host_of()
    host.take(ev("anon", T0, "view", product_id="p"))
    host.take(ev("known", T0 + 1000, "page", locale="de"))
    changes(host)
    host.take(Event("anon", T0 + 2000, "identify",
                    {"user_id": "anon", "ts": T0 + 2000, "type": "identify",
                     "known_id": "known"}))
    # the anonymous id's scene fire is the known user's now: they enter at the merge
    assert changes(host) == [("viewed_not_bought", "anon", "exit", T0 + 2000, "condition"),
                             ("viewed_not_bought", "known", "enter", T0 + 2000, "condition")]
    host.advance(T0 + 3 * H)
    assert changes(host) == [("viewed_not_bought", "known", "exit", T0 + 2 * H, "expired")]
