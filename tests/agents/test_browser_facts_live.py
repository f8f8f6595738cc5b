"""What a browser cannot state about anyone (docs/security.md, the browser's
row): with only the public collector token, an attacker posts, over HTTP to
the real collector on a real Kafka, the facts that only the product, a
provider or the directory establish (a share, a bounce, a consent change,
a birthday) under a victim's id. Each is refused with 403 ``system_type``
and nothing of the request reaches Kafka (no event, no dead letter), so no
reader (explain, the report, journeys, scenes, date scenes) can take it;
the backend's token still sends them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.collector import CollectorSettings, KafkaPublisher, create_collector_app
from agents.identity_gate import REASON_SYSTEM_TYPE
from agents.kafka_clients import new_producer
from agents.producer import ProduceTopics, ensure_topics
from tests.agents.kafka_read import read_topic, record_events, unique_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PUBLIC = "public-collector-token"
BACKEND = "backend-identify-token"
T0 = 1_780_000_000_000
# What the review forged, one per reader that would have trusted it.
FORGED = [
    {"type": "shared", "message_id": "m-victim-1", "channel": "sms", "scene": "cart"},
    {"type": "unsubscribed", "channel": "email", "detail": "marketing", "source": "one_click"},
    {"type": "subscribed", "channel": "sms", "detail": "marketing", "source": "admin"},
    {"type": "bounced", "message_id": "m-victim-1", "channel": "email"},
    {"type": "attributes", "birthday": "1990-06-17", "tz": "Europe/Berlin"},
]


async def _collector(bootstrap: str, topics: ProduceTopics) -> TestClient[Any, Any]:
    await ensure_topics(bootstrap, [topics.events, topics.dead_letters], 4)
    app = create_collector_app(KafkaPublisher(new_producer(bootstrap)), CollectorSettings(
        topics=topics, token=PUBLIC, identify_token=BACKEND))
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_the_public_token_cannot_state_product_facts_about_anyone(
        kafka_bootstrap: str) -> None:
    topics = ProduceTopics(events=unique_topic("ev"), dead_letters=unique_topic("dl"))
    client = await _collector(kafka_bootstrap, topics)
    public = {"Authorization": f"Bearer {PUBLIC}"}
    try:
        for n, fact in enumerate(FORGED):
            forged = {"user_id": "victim", "ts": T0 + n, **fact}
            view = {"user_id": "victim", "ts": T0 + n, "type": "view", "product_id": "p"}
            for body, items in (([forged], [0]), ([view, forged], [1])):  # alone, or hidden
                resp = await client.post("/events", data=orjson.dumps(body), headers=public)
                answer = await resp.json()
                assert (resp.status, answer["reason"], answer["items"]) == (
                    403, REASON_SYSTEM_TYPE, items), fact["type"]
        # The browser's own clickstream still goes in; the backend may state the facts.
        view = {"user_id": "victim", "ts": T0 + 10, "type": "view", "product_id": "p"}
        resp = await client.post("/events", data=orjson.dumps([view]), headers=public)
        assert resp.status == 202
        told = [{"user_id": "victim", "ts": T0 + 11, **FORGED[1]},
                {"user_id": "victim", "ts": T0 + 12, **FORGED[4]}]
        resp = await client.post("/events", data=orjson.dumps(told),
                                 headers={"Authorization": f"Bearer {BACKEND}"})
        assert resp.status == 202 and (await resp.json())["accepted"] == 2
        metrics = await (await client.get("/metrics")).text()
        assert f"scenetrigger_collector_identify_refused_total {2.0 * len(FORGED)}" in metrics
    finally:
        await client.close()
    stored = [(f["type"], f["ts"]) for _, f in record_events(
        await read_topic(kafka_bootstrap, topics.events))]
    assert sorted(stored, key=lambda s: s[1]) == [
        ("view", T0 + 10), ("unsubscribed", T0 + 11), ("attributes", T0 + 12)]
    assert await read_topic(kafka_bootstrap, topics.dead_letters) == []
