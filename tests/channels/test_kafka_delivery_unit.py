"""DeliveryConsumer without Kafka: records as the worker and the journeys
write them, a fake consumer (getmany/commit), the real pipeline over the
memory policy store, a recording sender and the shipped content."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from channels.assembly import DryRunSender, build_pipeline
from channels.content.catalog import MemoryCatalog
from channels.content.select import ContentSelector
from channels.delivery_records import (
    BAD_FIELD,
    BAD_PROFILE,
    INVALID_JSON,
    UNKNOWN_KIND,
    decode_trigger,
)
from channels.kafka_delivery import DeliveryConsumer, DeliveryTopics, ProfileCache
from channels.pipeline import DeliveryPipeline
from channels.policy.store import MemoryPolicyStore
from config.loader import load_config_text
from config.models import AppConfig
from strategies.actions import HandoffAction, SendAction, action_to_dict
from tests.channels.content_factories import HOUR, PHONE, T0, catalog, user_state
from triggers.events import Trigger
from triggers.profile import Profile
from triggers.state import UserState
from triggers.wire import trigger_record

TOPICS = DeliveryTopics("p.triggers", "p.journey-actions")
NOW = T0 + 60_000
SCENE = "repeat_view_no_purchase"
CONFIG = """
scenes:
  repeat_view_no_purchase: {kind: repeat, when: {type: view}, per: product_id, count: 3,
                            within: 30m}
delivery:
  default_timezone: UTC
  quiet_hours: {QUIET}
"""


def config(quiet: str = "{enabled: false}") -> AppConfig:
    return load_config_text(CONFIG.replace("{QUIET}", quiet))


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


class FakeConsumer:
    """aiokafka's getmany/commit: scripted batches, then asks ``owner`` to stop."""

    def __init__(self, batches: Sequence[dict[Any, list[Record]]]) -> None:
        self.batches = list(batches)
        self.commits: list[dict[Any, int]] = []
        self.owner: DeliveryConsumer | None = None

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None
                      ) -> dict[Any, list[Record]]:
        if self.batches:
            return self.batches.pop(0)
        assert self.owner is not None
        self.owner.stop()
        return {}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))


class Harness:
    def __init__(self, cfg: AppConfig | None = None, now: int = NOW,
                 store: Any = None) -> None:
        self.sender = DryRunSender()
        self.registry = CollectorRegistry()
        self.config = cfg or config()
        self.pipeline: DeliveryPipeline = build_pipeline(
            self.config, "live", self.sender, channels=["inbox", "webhook", "crm"],
            catalog=catalog(), store=store or MemoryPolicyStore(),
            metrics_registry=self.registry)
        self.consumer = FakeConsumer([])
        self.now = now
        self.delivery = DeliveryConsumer(self.pipeline, self.consumer, TOPICS,
                                         registry=self.registry, now_ms=lambda: self.now,
                                         release_interval_ms=3_600_000, retry_backoff_s=0.01)
        self.consumer.owner = self.delivery
        self.offsets: dict[str, int] = {}

    def record(self, topic: str, value: bytes | None, partition: int = 0) -> Record:
        offset = self.offsets.get(f"{topic}:{partition}", 0)
        self.offsets[f"{topic}:{partition}"] = offset + 1
        return Record(topic, partition, offset, value)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def trigger_value(user: str, state: UserState | None, ts: int = T0,
                  key: str = PHONE) -> bytes:
    trig = Trigger(SCENE, user, key, ts)
    return orjson.dumps(trigger_record(trig, ts + 5, state.profile if state else None))


def send_action(user: str, channel: str = "webhook", message_id: str = "jm-1") -> SendAction:
    return SendAction(user, channel, "reactivation_push_1", "reactivation", "push_1",
                      message_id, NOW - 1000, trigger_id="t-1")


# -- triggers -------------------------------------------------------------------

async def test_each_trigger_gets_the_content_of_its_users_style() -> None:
    h = Harness()
    users = {"s1": user_state("s1", "search_driven"), "c1": user_state("c1", "category_browser")}
    batch = {
        ("p.triggers", 0): [h.record("p.triggers", trigger_value("s1", users["s1"]))],
        ("p.triggers", 1): [h.record("p.triggers", trigger_value("c1", users["c1"]), 1)],
    }
    await h.delivery.handle_batch(batch)
    by_user = {m.user_id: m for m in h.sender.messages}
    assert set(by_user) == {"s1", "c1"}
    selector = ContentSelector(h.config.content, catalog(), "UTC")
    for user, state in users.items():
        expected = await selector.select(Trigger(SCENE, user, PHONE, T0), state, NOW)
        assert by_user[user].data["variant"] == expected.variant
        assert by_user[user].subject == expected.render().subject
        assert by_user[user].trigger_id == Trigger(SCENE, user, PHONE, T0).trigger_id
    assert by_user["s1"].data["variant"] == "search_exact"
    assert by_user["c1"].data["variant"] == "category_new"
    assert h.consumer.commits == [{("p.triggers", 0): 1, ("p.triggers", 1): 1}]
    assert h.metric("scenetrigger_deliver_records_total", kind="trigger",
                    result="delivered") == 2


async def test_a_redelivered_trigger_is_delivered_once() -> None:
    h = Harness()
    value = trigger_value("s1", user_state("s1", "search_driven"))
    first = await h.delivery.handle(h.record("p.triggers", value))
    again = await h.delivery.handle(h.record("p.triggers", value))
    assert first is not None and first.status == "delivered"
    assert again is not None and (again.status, again.reason) == ("suppressed", "duplicate")
    assert len(h.sender.messages) == 1
    assert h.metric("scenetrigger_suppressed_total", reason="duplicate") == 1


async def test_a_record_without_profile_uses_the_latest_one_seen() -> None:
    h = Harness()
    state = user_state("s1", "search_driven")
    await h.delivery.handle(h.record("p.triggers", trigger_value("s1", state, key="2002")))
    outcome = await h.delivery.handle(h.record("p.triggers", trigger_value("s1", None)))
    assert outcome is not None and outcome.style == "search_driven"
    stranger = await h.delivery.handle(h.record("p.triggers", trigger_value("x9", None)))
    assert stranger is not None and stranger.style == "undetermined"


async def test_malformed_records_are_counted_by_reason_and_skipped() -> None:
    h = Harness()
    good = trigger_value("s1", user_state("s1", "search_driven"))
    bad_profile = orjson.loads(good)
    bad_profile["profile"][0] = "many"
    no_user = orjson.loads(good)
    del no_user["user_id"]
    tag = {"kind": "tag", "user_id": "s1", "channel": "x", "content_ref": "r",
           "message_id": "m", "ts": 1}
    records = [h.record("p.triggers", v) for v in (
        b"{nope", b"[1, 2]", None, orjson.dumps(no_user), orjson.dumps(bad_profile), good)]
    records.append(h.record("p.journey-actions", orjson.dumps(tag)))
    await h.delivery.handle_batch({("p.triggers", 0): records[:-1],
                                   ("p.journey-actions", 0): records[-1:]})
    assert [m.user_id for m in h.sender.messages] == ["s1"]
    assert h.metric("scenetrigger_deliver_malformed_total", reason=INVALID_JSON) == 3
    assert h.metric("scenetrigger_deliver_malformed_total", reason=BAD_FIELD) == 1
    assert h.metric("scenetrigger_deliver_malformed_total", reason=BAD_PROFILE) == 1
    assert h.metric("scenetrigger_deliver_malformed_total", reason=UNKNOWN_KIND) == 1
    assert h.metric("scenetrigger_deliver_records_total", kind="trigger",
                    result="malformed") == 5
    assert h.consumer.commits == [{("p.triggers", 0): 6, ("p.journey-actions", 0): 1}]


def test_decoded_profile_round_trips_and_keeps_its_fields() -> None:
    state = user_state("s1", "category_browser", tz="Asia/Shanghai")
    decoded = decode_trigger(trigger_value("s1", state))
    assert decoded.trigger == Trigger(SCENE, "s1", PHONE, T0)
    assert decoded.profile is not None
    assert decoded.profile.to_wire() == state.profile.to_wire()
    assert decode_trigger(trigger_value("s1", None)).profile is None


# -- journey actions ------------------------------------------------------------

async def test_a_journey_send_is_rendered_for_the_user_and_sent_once() -> None:
    h = Harness()
    state = user_state("s1", "search_driven")
    await h.delivery.handle(h.record("p.triggers", trigger_value("s1", state)))
    value = orjson.dumps(action_to_dict(send_action("s1")))
    first = await h.delivery.handle(h.record("p.journey-actions", value))
    again = await h.delivery.handle(h.record("p.journey-actions", value))
    assert first is not None and first.status == "delivered"
    assert again is not None and (again.status, again.reason) == ("suppressed", "duplicate")
    journey = [m for m in h.sender.messages if m.message_id == "jm-1"]
    assert len(journey) == 1
    message = journey[0]
    expected = ContentSelector(h.config.content, MemoryCatalog(), "UTC").choose_ref(
        "reactivation_push_1", "s1", state, NOW)
    assert (message.channel, message.scene, message.trigger_id) == ("webhook", "", "t-1")
    assert message.data["variant"] == expected.variant == "push1_search"
    assert (message.subject, message.text) == (expected.render().subject,
                                               expected.render().text)
    assert (message.data["strategy"], message.data["step"]) == ("reactivation", "push_1")
    assert h.metric("scenetrigger_deliver_records_total", kind="send", result="delivered") == 1


async def test_a_send_on_an_unconfigured_channel_is_suppressed() -> None:
    h = Harness()
    value = orjson.dumps(action_to_dict(send_action("s1", channel="push")))
    outcome = await h.delivery.handle(h.record("p.journey-actions", value))
    assert outcome is not None and (outcome.status, outcome.reason) == ("suppressed",
                                                                       "no_channel")
    assert list(h.sender.messages) == []


async def test_a_handoff_goes_to_its_channel_once() -> None:
    h = Harness()
    handoff = HandoffAction("lead7", 55.5, "crm", "lead_handoff", "hm-1", NOW - 10)
    value = orjson.dumps(action_to_dict(handoff))
    first = await h.delivery.handle(h.record("p.journey-actions", value))
    again = await h.delivery.handle(h.record("p.journey-actions", value))
    assert first is not None and first.status == "delivered"
    assert again is not None and (again.status, again.reason) == ("suppressed", "duplicate")
    [message] = h.sender.messages
    assert (message.message_id, message.channel, message.user_id) == ("hm-1", "crm", "lead7")
    assert (message.data["kind"], message.data["score"]) == ("handoff", 55.5)
    # a handoff is not a message to the user: the back-off count stays untouched
    assert await h.pipeline.policy.store.engagement("st:eng:lead7") == (0, None)


# -- quiet hours, the LRU, the loop -----------------------------------------------

async def test_a_deferred_trigger_is_released_with_the_latest_profile() -> None:
    night = T0 - 3 * HOUR  # 23:00 UTC
    h = Harness(config('{start: "22:00", end: "08:00"}'), now=night)
    searcher = user_state("s1", "search_driven", now=night)
    value = trigger_value("s1", searcher, ts=night - 60_000)
    outcome = await h.delivery.handle(h.record("p.triggers", value))
    assert outcome is not None and outcome.status == "deferred"
    assert await h.delivery.release(night + HOUR) == []
    # a later record (a new trigger, also deferred) brings a newer profile
    browser = user_state("s1", "category_browser", now=night)
    await h.delivery.handle(h.record("p.triggers", trigger_value("s1", browser, ts=night,
                                                                 key="2001")))
    released = await h.delivery.release(night + 10 * HOUR)
    assert [(o.status, o.style) for o in released] == [("delivered", "category_browser")] * 2
    assert h.metric("scenetrigger_deliver_released_total", result="delivered") == 2


def test_profile_cache_drops_the_least_recently_used() -> None:
    cache = ProfileCache(limit=2)
    for user in ("a", "b"):
        cache.put(user, Profile())
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", Profile())
    assert (cache.get("a") is not None, cache.get("b"), cache.get("c") is not None) == (
        True, None, True)
    assert len(cache) == 2


class FlakyStore(MemoryPolicyStore):
    """Redis going away for the first ``failures`` dedupe claims."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def claim(self, key: str, ttl_ms: int, now_ms: int) -> bool:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("connection refused")
        return await super().claim(key, ttl_ms, now_ms)


async def test_run_retries_a_transient_error_and_commits_after_the_batch() -> None:
    h = Harness(store=FlakyStore(failures=2))
    values = [trigger_value(u, user_state(u, "search_driven")) for u in ("s1", "s2")]
    h.consumer.batches = [{("p.triggers", 0): [h.record("p.triggers", v) for v in values]}]
    await h.delivery.run()
    assert [m.user_id for m in h.sender.messages] == ["s1", "s2"]
    assert h.consumer.commits == [{("p.triggers", 0): 2}]
    assert h.delivery.handled == 2


async def test_stopping_during_a_retry_commits_only_what_was_handled() -> None:
    h = Harness(store=FlakyStore(failures=0))
    values = [trigger_value(u, user_state(u, "search_driven")) for u in ("s1", "s2")]
    records = [h.record("p.triggers", v) for v in values]
    store = h.pipeline.policy.store
    assert isinstance(store, FlakyStore)
    original = h.delivery.handle

    async def handle(record: Any) -> Any:
        if record.offset == 1:  # Redis is gone for the second record: stop meanwhile
            store.failures = 1_000
            h.delivery.stop()
        return await original(record)

    h.delivery.handle = handle  # type: ignore[method-assign]
    await h.delivery.handle_batch({("p.triggers", 0): records})
    assert [m.user_id for m in h.sender.messages] == ["s1"]
    assert h.consumer.commits == [{("p.triggers", 0): 1}]


@pytest.mark.parametrize("value", [b'{"scene": "s", "user_id": "u", "key": 5, "ts": 1}',
                                   b'{"scene": "s", "user_id": "u", "key": null, "ts": "1"}',
                                   b'{"scene": "", "user_id": "u", "key": null, "ts": 1}'])
def test_trigger_fields_are_checked(value: bytes) -> None:
    from channels.delivery_records import MalformedRecord

    with pytest.raises(MalformedRecord) as info:
        decode_trigger(value)
    assert info.value.reason == BAD_FIELD


async def test_a_stop_leaves_the_rest_of_the_batch_uncommitted() -> None:
    h = Harness()
    values = [trigger_value(u, user_state(u, "search_driven")) for u in ("s1", "s2", "s3")]
    records = [h.record("p.triggers", v) for v in values]
    original = h.delivery.handle

    async def handle(record: Any) -> Any:
        outcome = await original(record)
        if record.offset == 0:
            h.delivery.stop()  # SIGTERM while the first record is in hand
        return outcome

    h.delivery.handle = handle  # type: ignore[method-assign]
    await h.delivery.handle_batch({("p.triggers", 0): records})
    assert [m.user_id for m in h.sender.messages] == ["s1"]
    assert h.consumer.commits == [{("p.triggers", 0): 1}]


class RebalancingConsumer(FakeConsumer):
    """aiokafka during a rebalance: getmany ignores its timeout and waits for
    the new assignment (here: never); ``polling`` is set once it waits."""

    def __init__(self) -> None:
        super().__init__([])
        self.polling = asyncio.Event()

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None
                      ) -> dict[Any, list[Record]]:
        self.polling.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_stop_ends_run_while_a_poll_waits_out_a_rebalance() -> None:
    h = Harness()
    consumer = RebalancingConsumer()
    h.delivery.consumer = consumer
    running = asyncio.create_task(h.delivery.run())
    await asyncio.wait_for(consumer.polling.wait(), 5)
    h.delivery.stop()  # SIGTERM while the poll waits
    done, _ = await asyncio.wait({running}, timeout=5)
    assert done, "run() kept waiting for the poll after stop()"
    running.result()
    assert consumer.commits == []  # nothing was handed out, nothing committed
