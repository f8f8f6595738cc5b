"""Issue 19, point 7: the per-user trigger budget in the worker, as in replay.

One user fired 100,000 ``promo_arrival`` triggers in 30 minutes. With
``engine.max_triggers_per_user`` the worker refuses triggers over the budget
with a decision record (rule ``trigger_budget``) on the decisions topic and
a metric, never silently; the stored state carries what the budget needs;
replay refuses the same ones. (The worker's Kafka side is the worker = replay
test on real Kafka, which runs the shipped budget on both samples.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from agents.app import SceneWorker
from agents.checkpoint import Outbox
from agents.record_batching import encode_batch
from agents.settings import TopicNames, WorkerSettings
from config.loader import load_config_text
from scenetrigger.runtime.replay import new_host, replay
from tests.agents.test_app_unit import FakeProducer
from tests.agents.test_record_batching_unit import FakeMessage
from triggers.errors import EventRejected
from triggers.events import Event, Trigger, event_from_mapping
from triggers.state import UserState

CONFIG = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page, cooldown: 1h}
engine:
  max_triggers_per_user: {count: 5, within: 30m}
"""
T0 = 1_700_000_000_000


def pages(user: str, n: int, start: int = T0, name: str = "/promo/") -> list[dict[str, Any]]:
    """A bot: a new promo page every second."""
    return [{"user_id": user, "ts": start + i * 1000, "type": "page", "page": f"{name}{i}"}
            for i in range(n)]


async def test_the_worker_refuses_over_budget_with_records_and_a_metric(tmp_path: Path) -> None:
    config = load_config_text(CONFIG)
    worker = SceneWorker(WorkerSettings(config=config, app_id="unit", store="memory",
                                        broker="kafka://127.0.0.1:1", clock="event",
                                        topics=TopicNames.with_prefix("unit"),
                                        state_dir=tmp_path))
    producer = FakeProducer()
    worker.outbox = Outbox(lambda: producer)
    host = worker.host(0)
    events = pages("bot", 200) + pages("human", 3) + pages("bot", 3, T0 + 31 * 60_000, "/promo/b")
    for offset, start in enumerate(range(0, len(events), 50)):
        batch = [orjson.dumps(e) for e in events[start:start + 50]]
        worker._take_record(host, FakeMessage(encode_batch(batch), offset), T0)
        await worker.outbox.send()
    sent = [orjson.loads(value) for _, value in producer.sent["unit.triggers"]]
    got = [(t["user_id"], t["ts"]) for t in sent]
    # 5 of the bot's first 200; the human's 3; 30 minutes on, the bot's budget is free
    # again (the first 5 are older than ts - 30m).
    assert got == ([("bot", T0 + i * 1000) for i in range(5)]
                   + [("human", T0 + i * 1000) for i in range(3)]
                   + [("bot", T0 + 31 * 60_000 + i * 1000) for i in range(3)])
    records = [orjson.loads(value) for _, value in producer.sent["unit.decisions"]]
    refused = [r for r in records if r["outcome"] == "refused"]
    assert len(refused) == 195 and {r["rule"] for r in refused} == {"trigger_budget"}
    first = refused[0]
    assert (first["user_id"], first["scene"], first["ts"]) == ("bot", "promo_arrival",
                                                                 T0 + 5000)
    would = Trigger("promo_arrival", "bot", "/promo/5", T0 + 5000)
    assert first["trigger_id"] == would.trigger_id and "5 within 30m" in first["figures"]
    assert [r["outcome"] for r in records].count("triggered") == len(sent)
    assert worker.metrics.registry.get_sample_value(
        "scenetrigger_triggers_refused_total",
        {"scene": "promo_arrival", "rule": "trigger_budget"}) == 195
    # What the budget keeps is in the stored state: at most count times, newest.
    state = host.store.get("bot")
    assert state is not None and state.budget == [T0 + 3000, T0 + 4000] + [
        T0 + 31 * 60_000 + i * 1000 for i in (0, 1, 2)]
    assert UserState.decode(state.encode()).budget == state.budget

    # Replay refuses the same ones.
    fired: list[Trigger] = []
    replay_host = new_host(config)
    records_in: list[tuple[int, Event | EventRejected]] = [
        (n, event_from_mapping(e)) for n, e in enumerate(events, 1)]
    replay(records_in, replay_host, fired.append)
    assert [(t.user_id, t.ts) for t in fired] == got
    assert replay_host.engine.budget_refused == {"promo_arrival": 195}
