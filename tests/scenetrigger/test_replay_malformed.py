"""Malformed input: rejected with a reason and its line number, nothing else lost;
fuzzed bytes only ever produce the documented reason codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from scenetrigger.runtime.sources import read_jsonl, read_otto, read_rees46
from tests.scenetrigger.test_replay_samples import SCENES, run_cli
from tests.triggers.reference import run_reference
from triggers.errors import EventRejected
from triggers.events import REASONS, Event

MINUTE = 60_000
BIG = b'{"user_id":"a","ts":1,"type":"view","pad":"' + b"x" * (10 * 1024 * 1024) + b'"}'

# (line, reason) pairs; reason None is a valid event, "" a blank line (skipped silently)
LINES: list[tuple[bytes, str | None]] = [
    (b'{"user_id": "a", "ts": 0, "type": "view", "product_id": "p"}', None),
    (b'{"user_id": "a", "ts": 60000, "type": "view", "product_id": "p"', "invalid_json"),
    (b'{"user_id": "a", "ts": 60000.0, "type": "view", "product_id": "p"}', "wrong_type"),
    (b'{"user_id": "a", "ts": "60000", "type": "view", "product_id": "p"}', "wrong_type"),
    (b'{"user_id": "a", "ts": true, "type": "view", "product_id": "p"}', "wrong_type"),
    (b'{"user_id": "a", "ts": 9223372036854775808, "type": "cart"}', "wrong_type"),
    (b'{"user_id": true, "ts": 60000, "type": "view", "product_id": "p"}', "wrong_type"),
    (b'{"user_id": 18446744073709551616, "ts": 60000, "type": "view"}', "wrong_type"),
    (b'{"user_id": -9223372036854775809, "ts": 60000, "type": "view"}', "wrong_type"),
    (b'{"user_id": ["a"], "ts": 60000, "type": "view"}', "wrong_type"),
    (b'{"user_id": "a", "ts": 60000, "type": 3}', "wrong_type"),
    (b'{"ts": 60000, "type": "view", "product_id": "p"}', "missing_field"),
    (b'{"user_id": null, "ts": 60000, "type": "view"}', "missing_field"),
    (b'{"user_id": "a", "type": "view", "product_id": "p"}', "missing_field"),
    (b'{"user_id": "a", "ts": 60000}', "missing_field"),
    (b"", ""),
    (b"   ", ""),
    (b"\r", ""),
    (b'["user_id", "a"]', "not_object"),
    (b"42", "not_object"),
    (b'"text"', "not_object"),
    (b"null", "not_object"),
    (BIG, "too_large"),
    (b'{"user_id": "a\xff", "ts": 60000, "type": "view"}', "invalid_utf8"),
    (b"\xc3\x28", "invalid_utf8"),
    (b'{"user_id": "a", "ts": 60000, "type": "view", "product_id": "p"}', None),
    (b'{"user_id": 7, "ts": 60000, "type": "cart"}', None),
    (b"{,}", "invalid_json"),
    (b'{"user_id": "a", "ts": 120000, "type": "view", "product_id": "p"}', None),
    (b'{"user_id": "b", "ts": 200000000, "type": "page", "page": "/promo/x"}', None),
]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_malformed_lines_are_rejected_with_line_numbers_and_nothing_else_is_lost(
    tmp_path: Path,
) -> None:
    mixed = write(tmp_path / "mixed.jsonl", [line for line, _ in LINES])
    rejects = tmp_path / "rejects.jsonl"
    triggers, summary, _ = run_cli(mixed, "--rejects", rejects, tmp=tmp_path)

    expected = [
        (number, reason) for number, (_, reason) in enumerate(LINES, 1) if reason
    ]
    got = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["reason"]) for r in got] == expected
    assert all(isinstance(r["detail"], str) and r["detail"] for r in got)
    assert summary["rejected"] == {reason: sum(1 for _, r in expected if r == reason)
                                   for reason in {r for _, r in expected}}
    valid = [line for line, reason in LINES if reason is None]
    assert summary["events_read"] == len(expected) + len(valid)
    assert summary["events_taken"] == len(valid)

    clean_triggers, clean_summary, _ = run_cli(write(tmp_path / "clean.jsonl", valid),
                                               tmp=tmp_path)
    assert triggers == clean_triggers
    assert summary["triggers"] == clean_summary["triggers"]
    reference, _ = run_reference(SCENES, [orjson.loads(line) for line in valid])
    assert triggers == reference
    assert ("repeat_view_no_purchase", "a", "p", 2 * MINUTE) in triggers
    assert ("cart_abandonment", "7", None, MINUTE + 30 * MINUTE) in triggers
    assert ("promo_arrival", "b", "/promo/x", 200000000) in triggers


def test_rejection_details_say_what_was_wrong() -> None:
    lines = [b'{"user_id": 18446744073709551616, "ts": 1, "type": "v"}',
             b'{"user_id": "a", "ts": 1.5, "type": "v"}', BIG]
    details = [item.detail for _, item in read_jsonl(lines) if isinstance(item, EventRejected)]
    assert "beyond 64 bits" in details[0]
    assert "ts must be an integer, not float" in details[1]
    assert "limit is 1048576" in details[2]


def test_line_limit_is_configurable() -> None:
    line = b'{"user_id": "a", "ts": 1, "type": "view", "pad": "' + b"x" * 100 + b'"}'
    assert isinstance(next(read_jsonl([line], max_line_bytes=len(line)))[1], Event)
    assert isinstance(next(read_jsonl([line + b"\n"], max_line_bytes=len(line)))[1], Event)
    item = next(read_jsonl([line], max_line_bytes=len(line) - 1))[1]
    assert isinstance(item, EventRejected)
    assert item.reason == "too_large"


def test_rees46_bad_rows_are_rejected_with_reasons() -> None:
    header = (b"event_time,event_type,product_id,category_id,category_code,brand,price,"
              b"user_id,user_session")
    rows = [
        header,
        b"2019-10-01 00:00:00 UTC,view,1,2,,b,1.0,42,s",
        b"2019-10-01 00:00:00 UTC,view,1,2,,b,1.0,,s",
        b"2019-10-01 00:00:00,view,1,2,,b,1.0,42,s",
        b"2019-10-01 00:00:00 UTC,view,1,2",
        b"2019-10-01 00:00:00 UTC,,1,2,,b,1.0,42,s",
        b"2019-10-01 00:00:00 UTC,view,1,2,\xff,b,1.0,42,s",
        b"",
        b"2019-10-01 00:00:00 UTC,view,1\r2,2,,b,1.0,42,s",  # used to stop the stream
        b"2019-10-01 00:00:01 UTC,cart,1,2,a.b,b,1.0,42,s",
    ]
    got = [(n, item.reason if isinstance(item, EventRejected) else item.type)
           for n, item in read_rees46(rows)]
    assert got == [(2, "view"), (3, "missing_field"), (4, "wrong_type"), (5, "wrong_type"),
                   (6, "missing_field"), (7, "invalid_utf8"), (9, "wrong_type"), (10, "cart")]
    event = [item for _, item in read_rees46(rows) if isinstance(item, Event)][1]
    assert event.fields["category"] == "a.b"
    assert "category" not in next(iter(read_rees46(rows)))[1].fields  # type: ignore[union-attr]


def test_otto_bad_sessions_are_rejected_with_reasons() -> None:
    lines = [
        b'{"session": 1, "events": [{"aid": 5, "ts": 10, "type": "clicks"},'
        b' {"aid": 5, "ts": 11.5, "type": "clicks"}, {"aid": 5, "ts": 12, "type": "likes"}, 3]}',
        b'{"session": true, "events": [{"aid": 5, "ts": 10, "type": "carts"}]}',
        b'{"session": 2}',
        b'{"session": 2, "events": [',
    ]
    got = [(n, item.reason if isinstance(item, EventRejected) else item.type)
           for n, item in read_otto(lines)]
    assert got == [(1, "view"), (1, "wrong_type"), (1, "wrong_type"), (1, "not_object"),
                   (2, "wrong_type"), (3, "not_object"), (4, "invalid_json")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)
field_values = st.one_of(json_values, st.integers(-(2**70), 2**70), st.just("u"))


@st.composite
def event_like(draw: st.DrawFn) -> bytes:
    """Objects with the required fields of any type, some left out, sometimes cut short."""
    obj: dict[str, Any] = {}
    for name in ("user_id", "ts", "type", "product_id"):
        if draw(st.booleans()):
            obj[name] = draw(field_values)
    data = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()  # big ints too
    cut = draw(st.integers(0, len(data)))
    return data[:cut] if draw(st.booleans()) else data


lines_strategy = st.lists(st.binary(max_size=60) | event_like(), max_size=12)


def check_records(records: list[tuple[int, Event | EventRejected]], count: int) -> None:
    for number, item in records:
        assert 1 <= number <= count
        if isinstance(item, EventRejected):
            assert item.reason in REASONS
            assert item.detail
        else:
            assert type(item.user_id) is str
            assert type(item.ts) is int
            assert type(item.type) is str


@settings(max_examples=300, deadline=None)
@given(lines_strategy)
def test_fuzzed_jsonl_gives_only_documented_reasons(lines: list[bytes]) -> None:
    check_records(list(read_jsonl([line + b"\n" for line in lines], max_line_bytes=64)),
                  len(lines))


@settings(max_examples=200, deadline=None)
@given(lines_strategy)
def test_fuzzed_presets_give_only_documented_reasons(lines: list[bytes]) -> None:
    check_records(list(read_otto(lines)), len(lines))
    check_records(list(read_rees46(lines)), len(lines))
