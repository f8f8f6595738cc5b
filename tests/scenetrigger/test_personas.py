"""The persona clickstream: each persona's pattern, determinism, validity."""

from __future__ import annotations

import io
import itertools
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from scenetrigger.demo.personas import (
    BY_CATEGORY,
    CATALOG,
    MIN_AWAY_MS,
    PERSONAS,
    PROMO_PAGES,
    QUERIES,
    TIMEZONES,
    Clickstream,
    generate_events,
    write_jsonl,
)
from triggers.events import decode_event_line, event_from_mapping

START = 1_700_000_000_000
Event = dict[str, Any]


def take(stream: Clickstream, n: int) -> list[Event]:
    it = iter(stream)
    return [next(it) for _ in range(n)]


def sessions_by_persona(events: Iterable[Event], stream: Clickstream) -> dict[str, list[list[Event]]]:
    by_session: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_session[event["session_id"]].append(event)
    out: dict[str, list[list[Event]]] = defaultdict(list)
    for session in by_session.values():
        persona = stream.persona_of(session[0]["user_id"])
        assert persona is not None
        assert {e["user_id"] for e in session} == {session[0]["user_id"]}
        out[persona].append(session)
    return out


@pytest.fixture(scope="module")
def sample() -> tuple[Clickstream, list[Event]]:
    stream = Clickstream(users=500, seed=11, start_ms=START, rate=2.0)
    events = take(stream, 20_000)
    # Drop the sessions still open at the cut: their script is not complete.
    open_ids = {e["session_id"] for e in events[-400:]}
    return stream, [e for e in events if e["session_id"] not in open_ids]


def test_every_persona_has_sessions(sample: tuple[Clickstream, list[Event]]) -> None:
    stream, events = sample
    groups = sessions_by_persona(events, stream)
    assert set(groups) == set(PERSONAS)
    assert all(len(groups[p]) >= 50 for p in PERSONAS), {p: len(s) for p, s in groups.items()}


def test_searcher_searches_then_views_the_searched_product(
    sample: tuple[Clickstream, list[Event]],
) -> None:
    stream, events = sample
    for session in sessions_by_persona(events, stream)["searcher"]:
        searches = [e for e in session if e["type"] == "search"]
        views = [e for e in session if e["type"] == "view"]
        first = session[0]
        assert first["type"] == "search" and len(searches) >= 2
        category = QUERIES[first["query"]]
        assert all(QUERIES[e["query"]] == category for e in searches)  # refines, same intent
        assert views and all(v["category"] == category and v["source"] == "search" for v in views)
        assert {v["query"] for v in views} <= {e["query"] for e in searches}
        counts: dict[str, int] = defaultdict(int)
        for view in views:
            counts[view["product_id"]] += 1
        assert max(counts.values()) >= 3  # compares the product it searched for
        # Searching is a large share of what it does (the content's search_driven style).
        assert len(searches) / (len(searches) + len(views)) >= 0.3


def test_browser_opens_a_category_and_views_many_of_its_products(
    sample: tuple[Clickstream, list[Event]],
) -> None:
    stream, events = sample
    for session in sessions_by_persona(events, stream)["browser"]:
        first = session[0]
        assert first["type"] == "page" and first["page"] == f"/category/{first['category']}"
        views = [e for e in session if e["type"] == "view"]
        assert len(views) >= 4
        assert all(v["category"] == first["category"] and v["source"] == "category" for v in views)
        assert {e["type"] for e in session} <= {"page", "view", "favorite"}


def test_promo_hunter_lands_on_promo_pages_and_views_discounts(
    sample: tuple[Clickstream, list[Event]],
) -> None:
    stream, events = sample
    for session in sessions_by_persona(events, stream)["promo_hunter"]:
        pages = [e["page"] for e in session if e["type"] == "page"]
        assert session[0]["type"] == "page" and pages[0] in PROMO_PAGES
        assert all(p.startswith("/promo/") for p in pages)
        views = [e for e in session if e["type"] == "view"]
        assert views and all(v["source"] == "promo" for v in views)
        assert all(v["price"] < v["list_price"] and v["discount_pct"] > 0 for v in views)
        assert all(CATALOG[v["product_id"]].discount_pct == v["discount_pct"] for v in views)


def test_abandoner_ends_with_a_cart_and_never_buys(
    sample: tuple[Clickstream, list[Event]],
) -> None:
    stream, events = sample
    for session in sessions_by_persona(events, stream)["abandoner"]:
        assert session[-1]["type"] == "cart"
        assert session[-1]["product_id"] in CATALOG
        assert all(e["type"] == "view" for e in session[:-1]) and len(session) >= 3
    abandoners = {u for u, p in stream.personas.items() if p == "abandoner"}
    assert not any(e["type"] == "purchase" and e["user_id"] in abandoners for e in events)


def test_loyal_buyer_carts_and_buys_again_and_again(
    sample: tuple[Clickstream, list[Event]],
) -> None:
    stream, events = sample
    purchases: dict[str, int] = defaultdict(int)
    sessions = sessions_by_persona(events, stream)["loyal"]
    for session in sessions:
        types = [e["type"] for e in session]
        assert types[0] == "view" and "cart" in types
        if types[-1] == "purchase":
            assert session[-1]["price"] > 0 and session[-1]["items"] >= 1
            purchases[session[-1]["user_id"]] += 1
    assert sum(purchases.values()) >= 0.8 * len(sessions)  # nearly always pays
    assert max(purchases.values()) >= 3  # repeat purchases by the same buyer


def test_shoppers_stay_away_between_sessions(sample: tuple[Clickstream, list[Event]]) -> None:
    _, events = sample
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    by_session: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_session[event["session_id"]].append(event)
    for session in by_session.values():
        spans[session[0]["user_id"]].append((session[0]["ts"], session[-1]["ts"]))
    returns = 0
    for user_spans in spans.values():
        user_spans.sort()
        for (_, end), (start, _) in itertools.pairwise(user_spans):
            assert start - end >= MIN_AWAY_MS  # longer than the 30 min absence scene
            returns += 1
    assert returns > 0


def test_events_are_valid_time_ordered_and_from_the_pool() -> None:
    stream = Clickstream(users=50, seed=3, start_ms=START, rate=1.0)
    events = take(stream, 5_000)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert events[0]["ts"] >= START
    first_of_session: set[str] = set()
    for raw in events:
        event = event_from_mapping(raw)
        if raw["session_id"] not in first_of_session:
            first_of_session.add(raw["session_id"])
            assert raw["tz"] in TIMEZONES
        else:
            assert "tz" not in raw
        assert event.user_id in stream.personas
        if "product_id" in raw:
            product = CATALOG[raw["product_id"]]
            assert raw["category"] == product.category
            assert product in BY_CATEGORY[product.category]


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    first = list(generate_events(3_000, users=300, seed=5, start_ms=START))
    again = list(generate_events(3_000, users=300, seed=5, start_ms=START))
    other = list(generate_events(3_000, users=300, seed=6, start_ms=START))
    assert first == again
    assert first != other
    shifted = list(generate_events(3_000, users=300, seed=5, start_ms=START + 1000))
    assert [e["ts"] - 1000 for e in shifted] == [e["ts"] for e in first]


def test_rate_is_events_per_simulated_second() -> None:
    for rate in (0.5, 20.0):
        events = list(generate_events(20_000, users=50_000, seed=2, start_ms=START, rate=rate))
        seconds = (events[-1]["ts"] - events[0]["ts"]) / 1000
        assert 0.7 * rate < len(events) / seconds < 1.3 * rate


def test_a_small_pool_caps_the_rate_instead_of_failing() -> None:
    events = list(generate_events(2_000, users=5, seed=1, start_ms=START, rate=1000.0))
    assert len(events) == 2_000
    assert len({e["user_id"] for e in events}) == 5


def test_too_few_users_or_bad_rate_is_an_error() -> None:
    with pytest.raises(ValueError, match="one per persona"):
        Clickstream(users=4)
    with pytest.raises(ValueError, match="rate"):
        Clickstream(users=10, rate=0)


def test_write_jsonl_round_trips_through_the_replay_decoder() -> None:
    events = list(generate_events(10_000, users=1_000, seed=9, start_ms=START))
    buf = io.BytesIO()
    assert write_jsonl(iter(events), buf) == 10_000
    lines = buf.getvalue().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 10_001
    decoded = [decode_event_line(line) for line in lines[:-1]]
    assert [dict(e.fields) for e in decoded] == events
