"""Behaviour tags on the rees46 sample: profiles come from a replay through
the engine, and every tag is checked against properties the test computes
on its own from the raw CSV rows."""

from __future__ import annotations

import calendar
import csv
import time
from collections import defaultdict
from typing import Any

from config.content_models import ContentModel
from config.strategy_models import TagRulesModel
from scenetrigger.runtime.sources import read_events
from strategies.tags import all_tags, behaviour_tags, preferred_channel_tag, replace_derived
from tests.paths import REES46_SAMPLE
from triggers.engine import Engine
from triggers.events import Event

SAMPLE = REES46_SAMPLE


def _rows() -> list[dict[str, Any]]:
    with SAMPLE.open() as fh:
        return list(csv.DictReader(fh))


def _ts(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S UTC")) * 1000


def test_tags_on_the_rees46_sample_match_an_independent_computation() -> None:
    engine = Engine([])  # no scenes: the engine only builds profiles here
    with SAMPLE.open("rb") as fh:
        for _n, item in read_events(fh, "rees46"):
            assert isinstance(item, Event)
            engine.handle(item)
    content = ContentModel()
    habits, segs = content.habits, content.segments
    per_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _rows():
        per_user[row["user_id"]].append(row)
    now = max(_ts(r["event_time"]) for rows in per_user.values() for r in rows)
    assert len(engine.store) == len(per_user)
    seen: dict[str, int] = defaultdict(int)
    for user, rows in per_user.items():
        state = engine.store.get(user)
        assert state is not None
        tags = behaviour_tags(state.profile, content, now)
        for tag in tags:
            seen[tag] += 1
        # habit: by UTC hour and weekday of each row, straight from the CSV text
        stamps = [time.strptime(r["event_time"], "%Y-%m-%d %H:%M:%S UTC") for r in rows]
        if len(rows) >= habits.min_events:
            parts = {"night": 0, "morning": 0, "afternoon": 0, "evening": 0}
            for st in stamps:
                parts[("night", "morning", "afternoon", "evening")[st.tm_hour // 6]] += 1
            top = [p for p, n in parts.items() if n / len(rows) >= habits.day_part_share]
            assert {t for t in tags if t.startswith("tod:")} == {f"tod:{p}" for p in top[:1]}
            weekend = sum(st.tm_wday >= 5 for st in stamps) / len(rows)
            assert ("weekend" in tags) == (weekend >= habits.weekend_share)
            assert ("weekday" in tags) == (weekend < habits.weekend_share)
        else:
            assert not tags & {"weekday", "weekend"} and not any(t.startswith("tod:") for t in tags)
        # style: rees46 rows carry no search, category-list or promo signal, so
        # every share is 0 and no style reaches its threshold
        assert state.profile.views == sum(r["event_type"] == "view" for r in rows)
        assert state.profile.searches == state.profile.promo_views == 0
        assert [t for t in tags if t.startswith("style:")] == ["style:undetermined"]
        # value segment: purchases and their amount from the price column
        buys = [float(r["price"]) for r in rows if r["event_type"] == "purchase"]
        amount = round(sum(round(p * 100) for p in buys)) / 100
        if not buys:
            expected = "new_or_lapsed"
        elif len(buys) >= segs.champion_min_purchases and amount >= segs.champion_min_amount:
            expected = "champion"
        elif len(buys) >= segs.loyal_min_purchases or amount >= segs.loyal_min_amount:
            expected = "loyal"
        else:
            expected = "promising"
        assert f"segment:{expected}" in tags, (user, buys)
    # the sample is not degenerate for these rules: both sides of each rule occur
    assert 0 < seen["tod:night"] < len(per_user)
    assert seen["segment:new_or_lapsed"] < len(per_user)
    assert seen["segment:promising"] + seen["segment:loyal"] + seen["segment:champion"] > 0


def test_preferred_channel_from_opens() -> None:
    assert preferred_channel_tag({"wechat": 3, "sms": 1}, 2) == "prefers_wechat"
    assert preferred_channel_tag({"wechat": 1}, 2) is None
    assert preferred_channel_tag({"sms": 2, "email": 2}, 2) == "prefers_email"  # tie: by name
    tags = all_tags(None, ContentModel(), TagRulesModel(min_opens=1), 0, {"push": 1})
    assert tags == {"style:undetermined", "segment:new_or_lapsed", "prefers_push"}


def test_derived_tags_are_replaced_and_sticky_tags_stay() -> None:
    add, remove = replace_derived(
        {"churned", "tod:night", "weekday", "segment:loyal"},
        {"tod:evening", "weekday", "segment:loyal"},
    )
    assert add == {"tod:evening"} and remove == {"tod:night"}
