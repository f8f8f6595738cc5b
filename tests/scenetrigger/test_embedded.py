"""The embedded runtime on a fake clock: scenes fire, absence fires with no traffic."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import generate_latest

from config.loader import load_config
from scenetrigger.demo.content import BuiltinContent, pick_content
from scenetrigger.demo.personas import Clickstream
from scenetrigger.runtime.embedded import (
    ContentPreview,
    EmbeddedRuntime,
    StateLookup,
    TriggerContext,
    TriggerRecord,
)
from scenetrigger.runtime.replay import new_engine
from triggers.engine import Engine
from triggers.events import Trigger

START = 1_700_000_000_000
MIN = 60_000


class FakeClock:
    """Real time that passes only when the runtime sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        await asyncio.sleep(0)


def engine() -> Engine:
    return new_engine(load_config())


class Recorder:
    """Wraps an event source and remembers what the runtime pulled from it."""

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        self.events = events
        self.taken: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self.events:
            self.taken.append(event)
            yield event


async def test_persona_stream_fires_all_three_scenes_on_the_accelerated_clock() -> None:
    stream = Clickstream(users=100, seed=4, start_ms=START, rate=15 / 600)
    source = Recorder(iter(stream))
    clock = FakeClock()
    runtime = EmbeddedRuntime(engine(), source, start_ms=START, speed=600,
                              persona_of=stream.persona_of, content=BuiltinContent(),
                              clock=clock)
    seen: list[TriggerRecord] = []
    runtime.subscribe(seen.append)
    stats = await runtime.run(duration_seconds=20)

    assert stats.sim_ms - START == pytest.approx(20 * 600 * 1000, rel=0.01)
    scenes = Counter(r.trigger.scene for r in seen)
    assert set(scenes) == {"repeat_view_no_purchase", "cart_abandonment", "promo_arrival"}
    assert dict(stats.triggers) == dict(scenes)
    due = [e for e in source.taken if e["ts"] <= stats.sim_ms]
    assert stats.events == len(due) > 100
    assert source.taken[len(due):] == source.taken[-1:]  # only the next one was peeked
    personas = {r.persona for r in seen}
    assert {"abandoner", "promo_hunter"} <= personas and "unknown" not in personas
    # Absence fires on the clock: no event of that user after the cart, up to firing.
    for record in (r for r in seen if r.trigger.scene == "cart_abandonment"):
        trig = record.trigger
        assert record.via == "timer" and record.fired_ms > trig.ts
        mine = [e for e in due if e["user_id"] == trig.user_id and e["ts"] <= record.fired_ms]
        assert mine[-1]["type"] == "cart" and mine[-1]["ts"] == trig.ts - 30 * MIN
    # Every trigger came with a persona-worded preview.
    assert all(len(r.content) == 1 and r.content[0].subject for r in seen)


async def test_absence_fires_with_no_further_traffic_at_all() -> None:
    events = [
        {"user_id": "ann", "ts": START + 1000, "type": "view", "product_id": "1000100"},
        {"user_id": "ann", "ts": START + 2000, "type": "cart", "product_id": "1000100"},
    ]
    runtime = EmbeddedRuntime(engine(), events, start_ms=START, speed=60, clock=FakeClock())
    assert await runtime.step(START + 2000) == []
    deadline = START + 2000 + 30 * MIN
    assert await runtime.step(deadline) == []  # due only when the clock is past it
    fired = await runtime.step(deadline + 1)
    assert [(r.trigger, r.via, r.fired_ms) for r in fired] == [
        (Trigger("cart_abandonment", "ann", None, deadline), "timer", deadline + 1)
    ]
    assert await runtime.step(deadline + 10 * MIN) == []  # fired once


async def test_an_identified_anonymous_cart_fires_for_the_known_user() -> None:
    """The demo's runtime merges ids through its engine host: a cart armed
    anonymously, then a login, then silence: the known user is reminded."""
    events = [
        {"user_id": "device-1", "ts": START + 1000, "type": "cart", "product_id": "1000100"},
        {"user_id": "device-1", "ts": START + 2000, "type": "identify", "known_id": "ann"},
    ]
    runtime = EmbeddedRuntime(engine(), events, start_ms=START, speed=60, clock=FakeClock())
    deadline = START + 1000 + 30 * MIN
    fired = await runtime.step(deadline + 1)
    assert [r.trigger for r in fired] == [Trigger("cart_abandonment", "ann", None, deadline)]
    assert runtime.stats.events == 2


async def test_purchase_before_the_deadline_cancels() -> None:
    events = [
        {"user_id": "bob", "ts": START, "type": "cart", "product_id": "1"},
        {"user_id": "bob", "ts": START + 30 * MIN, "type": "purchase", "product_id": "1"},
    ]
    runtime = EmbeddedRuntime(engine(), events, start_ms=START, speed=60, clock=FakeClock())
    runtime.engine.advance(START)
    assert await runtime.step(START + 5 * 60 * MIN) == []
    assert runtime.stats.events == 2


async def test_run_feeds_events_only_when_the_simulated_clock_reaches_them() -> None:
    events = [
        {"user_id": "cy", "ts": START + i * MIN, "type": "view", "product_id": "7"}
        for i in range(3)
    ] + [{"user_id": "cy", "ts": START + 5 * MIN, "type": "page", "page": "/promo/x"}]
    clock = FakeClock()
    runtime = EmbeddedRuntime(engine(), events, start_ms=START, speed=60, clock=clock,
                              tick_seconds=0.5)
    seen: list[TriggerRecord] = []
    runtime.subscribe(seen.append)
    await runtime.run(duration_seconds=2.0)  # 2 min simulated: views 0, 1 and 2
    assert runtime.stats.events == 3
    assert [r.trigger.scene for r in seen] == ["repeat_view_no_purchase"]
    assert seen[0].via == "event" and seen[0].trigger.key == "7"
    assert seen[0].persona == "unknown"


async def test_rejected_events_are_counted_and_do_not_stop_the_stream() -> None:
    events: list[Mapping[str, Any]] = [
        {"user_id": "dee", "ts": "soon", "type": "view"},
        {"user_id": "dee", "ts": START + 1, "type": "page", "page": "/promo/a"},
        {"ts": START + 2, "type": "view"},
    ]
    runtime = EmbeddedRuntime(engine(), events, start_ms=START, speed=60, clock=FakeClock())
    fired = await runtime.step(START + MIN)
    assert [r.trigger.scene for r in fired] == ["promo_arrival"]
    assert runtime.stats.events == 1
    assert runtime.stats.rejected == Counter({"wrong_type": 1, "missing_field": 1})
    text = generate_latest(runtime.metrics.registry).decode()
    assert 'scenetrigger_events_total{reason="wrong_type",result="rejected"} 1.0' in text
    assert 'scenetrigger_events_total{reason="missing_field",result="rejected"} 1.0' in text
    assert 'scenetrigger_events_total{reason="",result="accepted"} 1.0' in text


async def test_metrics_count_triggers_per_scene_in_a_registry_of_its_own() -> None:
    stream = Clickstream(users=50, seed=8, start_ms=START, rate=0.05)
    first = EmbeddedRuntime(engine(), stream, start_ms=START, speed=600, clock=FakeClock(),
                            persona_of=stream.persona_of)
    second = EmbeddedRuntime(engine(), [], start_ms=START, speed=600, clock=FakeClock())
    await first.run(duration_seconds=10)
    text = generate_latest(first.metrics.registry).decode()
    for scene, count in first.stats.triggers.items():
        assert count > 0
        assert f'scenetrigger_triggers_total{{scene="{scene}"}} {float(count)}' in text
    assert f"scenetrigger_demo_users {float(len(first.engine.store))}" in text
    assert 'scenetrigger_triggers_total{scene="promo_arrival"} 0.0' in generate_latest(
        second.metrics.registry).decode()


async def test_async_subscribers_are_awaited_and_content_errors_do_not_stop_the_demo() -> None:
    class Broken:
        name = "broken"

        async def preview(self, trigger: Trigger, context: TriggerContext) -> tuple[
                ContentPreview, ...]:
            raise RuntimeError("template bug")

        async def release(self, now_ms: int, states: StateLookup) -> list[
                tuple[Trigger, ContentPreview]]:
            raise RuntimeError("store down")

        async def close(self) -> None:
            return None

    events = [{"user_id": "eve", "ts": START, "type": "page", "page": "/promo/z"}]
    runtime = EmbeddedRuntime(engine(), events, start_ms=START, speed=60, clock=FakeClock(),
                              content=Broken())
    got: list[TriggerRecord] = []

    async def slow(record: TriggerRecord) -> None:
        await asyncio.sleep(0)
        got.append(record)

    runtime.subscribe(slow)
    fired = await runtime.step(START)
    assert got == fired and fired[0].content == ()


async def test_builtin_content_differs_by_persona() -> None:
    content = BuiltinContent()
    trig = Trigger("repeat_view_no_purchase", "u1", "1000100", START)
    subjects = {
        persona: (await content.preview(trig, TriggerContext(persona, None, START)))[0].subject
        for persona in ("searcher", "browser", "promo_hunter", "loyal")
    }
    assert len(set(subjects.values())) == 4
    assert all("Trail Runner 2" in s for s in subjects.values())


async def test_snapshot_lists_recent_triggers_newest_first() -> None:
    events = [
        {"user_id": f"p{i}", "ts": START + i, "type": "page", "page": "/promo/a"} for i in range(60)
    ]
    runtime = EmbeddedRuntime(engine(), events, start_ms=START, speed=60, clock=FakeClock(),
                              recent=20)
    await runtime.step(START + MIN)
    snap = runtime.snapshot()
    assert snap["triggers"]["promo_arrival"] == 60 and snap["events"] == 60
    assert [r["user_id"] for r in snap["recent"]] == [f"p{i}" for i in range(59, 39, -1)]
    assert snap["recent"][0]["key"] == "/promo/a" and snap["recent"][0]["via"] == "event"


async def test_pipeline_content_differs_by_segment_and_releases_held_messages() -> None:
    day_0100_utc = (START // 86_400_000) * 86_400_000 + 3_600_000
    stream = Clickstream(users=100, seed=4, start_ms=day_0100_utc, rate=15 / 600)
    config = load_config()
    runtime = EmbeddedRuntime(new_engine(config), stream, start_ms=day_0100_utc, speed=600,
                              persona_of=stream.persona_of, content=pick_content(config),
                              clock=FakeClock())
    seen: list[TriggerRecord] = []
    runtime.subscribe(seen.append)
    await runtime.run(duration_seconds=60)  # 10 simulated hours: through quiet hours somewhere

    previews = [(r, p) for r in seen for p in r.content]
    assert len(previews) == len(seen) and all(p.channel.endswith("-dry-run") for _, p in previews)
    assert {p.status for _, p in previews} <= {"send", "deferred", "suppressed"}
    # Searchers get the exact-product variant, category browsers the category one.
    by_persona: dict[str, set[str | None]] = {}
    for record, preview in previews:
        if record.trigger.scene == "repeat_view_no_purchase" and record.via == "event":
            by_persona.setdefault(record.persona, set()).add(preview.variant)
    assert "search_exact" in by_persona["searcher"]
    assert "category_new" in by_persona["browser"]
    assert not by_persona["searcher"] & by_persona["browser"]
    # Quiet hours (22:00-08:00 local): held back at firing, sent later on the clock.
    deferred = [r for r, p in previews if p.status == "deferred"]
    released = [r for r in seen if r.via == "release"]
    assert deferred and released
    assert {r.trigger.trigger_id for r in released} <= {r.trigger.trigger_id for r in deferred}
    for record in released:
        original = next(r for r in deferred if r.trigger.trigger_id == record.trigger.trigger_id)
        assert record.fired_ms >= original.content[0].due_ms  # type: ignore[operator]
    assert runtime.stats.held["deferred"] == len(deferred)
    assert sum(runtime.stats.triggers.values()) == len(seen) - len(released)
