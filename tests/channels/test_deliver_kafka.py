"""`scenetrigger deliver` end to end: real Kafka, the real scene worker
(subprocess), real Redis and a real aiohttp webhook receiver.

A search-driven shopper and a category browser each view one product three
times (repeat_view_no_purchase), a third user opens a promo page
(promo_arrival). The worker publishes the triggers with the users' profiles;
`scenetrigger deliver` (subprocess) sends one message per trigger, its
content chosen by the user's browsing style, and publishes a `delivered`
feedback event per message to the events topic (which the worker takes
without rejecting) and, with --journeys-feedback, to the journeys' feedback
topic. A second consumer group reading everything again delivers nothing
twice (Redis dedupe), and a journey send put on the actions topic, twice, is
delivered once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from agents.producer import ensure_topics
from channels.content.catalog import MemoryCatalog, read_products
from channels.content.select import ContentSelector
from channels.delivery_records import decode_trigger, state_with
from channels.feedback.decisions import DecisionRecord
from channels.transports.inbox import InboxStore
from config.loader import load_config
from strategies.actions import SendAction, action_to_dict
from tests.agents.kafka_read import read_topic
from tests.agents.worker_support import (
    MIN_WAIT_S,
    WorkerProcess,
    committed_offsets,
    start_cli,
    start_worker,
    unique,
)
from tests.channels.receivers import Receiver, running_receiver
from tests.services import free_port

SCENE = "repeat_view_no_purchase"
PROMO = "promo_arrival"
PRODUCTS = [
    {"product_id": "p-shoe", "name": "Red Runner", "price": "59.90", "category": "shoes",
     "url": "https://shop.example.com/p/shoe"},
    {"product_id": "p-boot", "name": "Trail Boot", "price": "89.00", "category": "shoes",
     "url": "https://shop.example.com/p/boot", "is_new": "true"},
    {"product_id": "p-sock", "name": "Wool Sock", "price": "9.00", "category": "shoes"},
]


def config_dict(webhook_url: str, run: str) -> dict[str, Any]:
    return {
        "scenes": {
            SCENE: {"kind": "repeat", "when": {"type": "view"}, "per": "product_id",
                    "count": 3, "within": "30m", "unless": {"type": "purchase"},
                    "cooldown": "24h"},
            PROMO: {"kind": "arrival", "when": {"page": {"prefix": "/promo"}}, "per": "page",
                    "cooldown": "1h"},
        },
        "channels": {
            "webhook": {"type": "webhook", "url": webhook_url,
                        "secret_env": "DELIVER_TEST_SECRET", "timeout": "5s"},
            "inbox": {"type": "inbox", "redis_url_env": "DELIVER_TEST_REDIS",
                      "key_prefix": f"{run}:inbox"},
        },
        "content": {
            "scenes": {
                SCENE: {
                    "variants": [
                        {"name": "search_exact", "when": {"style": ["search_driven"]},
                         "products": "trigger", "channels": ["webhook"],
                         "subject": "Still thinking about ${product_name}?",
                         "text": "${product_name}, ${currency}${product_price}: ${product_url}"},
                        {"name": "category_new", "when": {"style": ["category_browser"]},
                         "products": "category", "max_products": 3, "channels": ["inbox"],
                         "subject": "New in ${category}",
                         "text": "Fresh picks in ${category}:\n${products}"},
                    ],
                    "fallback": {"channels": ["inbox"], "subject": "Still looking?",
                                 "text": "The things you viewed are still here."},
                },
                PROMO: {"fallback": {"channels": ["inbox", "webhook"],
                                     "subject": "Welcome to the sale",
                                     "text": "The sale is on: have a look around."}},
            },
            "journeys": {
                "welcome_back": {
                    "variants": [{"name": "wb_search", "when": {"style": ["search_driven"]},
                                  "channels": ["webhook"], "subject": "Find ${query} faster",
                                  "text": "New results for ${query} are in."}],
                    "fallback": {"name": "wb_generic", "channels": ["webhook"],
                                 "subject": "We miss you", "text": "Come and have a look."},
                },
            },
        },
        "delivery": {"default_timezone": "UTC", "quiet_hours": {"enabled": False},
                     "redis_prefix": f"{run}:"},
    }


def clickstream(searcher: str, browser: str, promo: str, now: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(3):
        events.append({"user_id": searcher, "ts": now + i, "type": "search",
                       "query": "red shoes"})
        events.append({"user_id": browser, "ts": now + i, "type": "page",
                       "page": "/category/shoes"})
    for i in range(3):
        events.append({"user_id": searcher, "ts": now + 10 + i, "type": "view",
                       "product_id": "p-shoe", "category": "shoes", "source": "search"})
        events.append({"user_id": browser, "ts": now + 10 + i, "type": "view",
                       "product_id": "p-boot", "category": "shoes", "source": "category"})
    events.append({"user_id": promo, "ts": now + 20, "type": "page", "page": "/promo/autumn"})
    return events


def start_deliver(tmp: Path, name: str, bootstrap: str, prefix: str, group: str,
                  config: Path, catalog: Path, redis_url: str,
                  extra: Sequence[str] = ()) -> WorkerProcess:
    port = free_port()
    log_path = tmp / f"deliver-{name}.log"
    args = ["deliver", "--config", str(config), "--broker", bootstrap, "--topic-prefix", prefix,
            "--group", group, "--redis-url", redis_url, "--catalog", str(catalog),
            "--metrics-port", str(port), "--release-interval", "200ms", *extra]
    return start_cli(log_path, name, args, port,
                     {"DELIVER_TEST_SECRET": "test-secret", "DELIVER_TEST_REDIS": redis_url})


async def until(what: str, check: Callable[[], bool], timeout_s: float,
                procs: Sequence[WorkerProcess]) -> None:
    """Poll without blocking the loop (the webhook receiver runs on it); the
    bound is at least :data:`MIN_WAIT_S` (a hang guard, as in ``wait_for``)."""
    timeout_s = max(timeout_s, MIN_WAIT_S)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        for proc in procs:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited ({proc.process.returncode}) while "
                                     f"waiting for {what}:\n{proc.log_tail()}")
        await asyncio.sleep(0.25)
    tails = "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in procs)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tails}")


def records(proc: WorkerProcess, kind: str, result: str) -> float:
    return proc.metric("scenetrigger_deliver_records_total", kind=kind, result=result)


async def stop(proc: WorkerProcess) -> int | None:
    await asyncio.to_thread(proc.stop)
    return proc.process.returncode


async def produce(bootstrap: str, topic: str, values: Sequence[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def inbox_messages(redis_url: str, prefix: str, users: Sequence[str]
                         ) -> list[dict[str, Any]]:
    client = Redis.from_url(redis_url)
    try:
        store = InboxStore(client, prefix)
        out: list[dict[str, Any]] = []
        for user in users:
            out += [item.message for item in await store.list(user, unread_only=False)]
        return out
    finally:
        await client.aclose()


async def feedback_records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The feedback records of a topic (keyed by their user), in topic order per user."""
    out = []
    for record in await read_topic(bootstrap, topic):
        value = orjson.loads(record.value)
        if value.get("source") == "feedback":
            assert record.key == value["user_id"].encode()
            out.append(value)
    return sorted(out, key=lambda v: (v["user_id"], v["message_id"]))


@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_deliver_sends_one_message_per_trigger_by_style_and_never_twice(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    run = unique("dlv")
    prefix = unique("t-deliver")
    searcher, browser, promo = f"{run}-searcher", f"{run}-browser", f"{run}-promo"
    catalog_path = tmp_path / "products.jsonl"
    catalog_path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in PRODUCTS))
    topics = [f"{prefix}.{t}" for t in ("events", "ticks", "triggers", "dead-letters")]
    await ensure_topics(kafka_bootstrap, topics, 4)
    now = time.time_ns() // 1_000_000
    await produce(kafka_bootstrap, f"{prefix}.events", [
        (e["user_id"], orjson.dumps(e)) for e in clickstream(searcher, browser, promo, now)])

    async with running_receiver(Receiver()) as receiver:
        config_path = tmp_path / "deliver.yaml"
        config_path.write_text(yaml.safe_dump(config_dict(receiver.url, run)))
        config = load_config(config_path)
        worker = start_worker(tmp_path, "w", kafka_bootstrap, prefix, prefix, [], config_path)
        first = start_deliver(tmp_path, "first", kafka_bootstrap, prefix, f"{prefix}-g1",
                              config_path, catalog_path, redis_url, ["--journeys-feedback"])
        procs = [worker, first]  # watched: a death fails the wait at once
        everyone = list(procs)
        try:
            await until("three deliveries",
                        lambda: records(first, "trigger", "delivered") >= 3, 180, procs)
            assert await stop(first) == 0, first.log_tail()
            procs.remove(first)
            assert "delivered" in first.log_tail(15)  # the summary at a clean stop

            triggers = [decode_trigger(r.value) for r in
                        await read_topic(kafka_bootstrap, f"{prefix}.triggers")]
            assert sorted((t.trigger.scene, t.trigger.user_id) for t in triggers) == sorted(
                [(SCENE, searcher), (SCENE, browser), (PROMO, promo)])
            by_user = {t.trigger.user_id: t for t in triggers}
            hooks = [orjson.loads(r.body) for r in receiver.requests]
            assert all(r.signature_ok for r in receiver.requests)
            inbox = await inbox_messages(redis_url, f"{run}:inbox", [searcher, browser, promo])
            delivered = hooks + inbox
            # exactly one message per trigger, on the channel its content names
            assert sorted(m["trigger_id"] for m in delivered) == sorted(
                t.trigger.trigger_id for t in triggers)
            assert [m["user_id"] for m in hooks] == [searcher]
            assert sorted(m["user_id"] for m in inbox) == sorted([browser, promo])

            # the variant follows the user's style, as channels.content.select chooses it
            products = MemoryCatalog(read_products(catalog_path))
            selector = ContentSelector(config.content, products, "UTC")
            message_of = {m["user_id"]: m for m in delivered}
            for user, variant in ((searcher, "search_exact"), (browser, "category_new")):
                record = by_user[user]
                assert record.profile is not None
                expected = await selector.select(record.trigger, state_with(record.profile),
                                                 time.time_ns() // 1_000_000)
                assert expected.variant == variant
                assert message_of[user]["data"]["variant"] == variant
                assert message_of[user]["subject"] == expected.render().subject
            assert message_of[searcher]["subject"] == "Still thinking about Red Runner?"
            assert message_of[browser]["subject"] == "New in shoes"
            assert message_of[promo]["data"]["variant"] == "generic"

            # one `delivered` feedback record per message, keyed by user, on the
            # events topic and the journeys' feedback topic alike
            feedback = await feedback_records(kafka_bootstrap, f"{prefix}.feedback")
            on_events = await feedback_records(kafka_bootstrap, f"{prefix}.events")
            assert on_events == feedback
            assert sorted((f["type"], f["user_id"], f["message_id"], f["channel"], f["scene"])
                          for f in feedback) == sorted(
                ("delivered", m["user_id"], m["message_id"], m["channel"], m["scene"])
                for m in delivered)
            assert all(f["source"] == "feedback" for f in feedback)
            # the worker takes them like any event: none rejected, no trigger
            clicks = len(clickstream(searcher, browser, promo, now))
            await until("the worker to take the feedback", lambda: worker.metric(
                "scenetrigger_events_total", result="accepted") >= clicks + 3, 120, procs)
            assert worker.metric("scenetrigger_events_total", result="rejected") == 0

            # the first group committed everything it handled before it stopped
            # (a partition that never had a record has no committed offset)
            committed, ends = await asyncio.to_thread(
                committed_offsets, kafka_bootstrap, f"{prefix}-g1", f"{prefix}.triggers")
            assert sum(ends.values()) == 3
            assert {p: committed[p] for p, end in ends.items() if end} == {
                p: end for p, end in ends.items() if end}

            # a new group reads the triggers again: all duplicates, nothing sent
            second = start_deliver(tmp_path, "second", kafka_bootstrap, prefix,
                                   f"{prefix}-g2", config_path, catalog_path, redis_url)
            procs.append(second)
            everyone.append(second)
            await until("the second group to take the triggers",
                        lambda: records(second, "trigger", "suppressed") >= 3, 120, procs)
            assert second.metric("scenetrigger_suppressed_total", reason="duplicate") == 3

            # a journey send (twice on the topic: at-least-once upstream) goes out once
            send = SendAction(searcher, "webhook", "welcome_back", "reactivation", "push_1",
                              f"{run}-jm", now + 100, trigger_id=by_user[searcher]
                              .trigger.trigger_id)
            value = orjson.dumps(action_to_dict(send))
            await produce(kafka_bootstrap, f"{prefix}.journey-actions",
                          [(searcher, value), (searcher, value)])
            await until("the journey send", lambda: records(second, "send", "delivered")
                        + records(second, "send", "suppressed") >= 2, 120, procs)
            assert records(second, "send", "delivered") == 1
            assert records(second, "trigger", "delivered") == 0
            assert await stop(second) == 0, second.log_tail()
        finally:
            for proc in everyone:
                await stop(proc)

        hooks = [orjson.loads(r.body) for r in receiver.requests]
        assert [m["message_id"] for m in hooks][1:] == [f"{run}-jm"]
        # the second group (no --journeys-feedback) wrote the journey send's
        # feedback to the events topic only
        journey_feedback = [f for f in await feedback_records(kafka_bootstrap,
                                                              f"{prefix}.events")
                            if f["message_id"] == f"{run}-jm"]
        assert [(f["type"], f["strategy"], f["step"]) for f in journey_feedback] == [
            ("delivered", "reactivation", "push_1")]
        assert len(await feedback_records(kafka_bootstrap, f"{prefix}.feedback")) == 3
        journey = hooks[1]
        searcher_profile = by_user[searcher].profile
        assert searcher_profile is not None
        expected_ref = ContentSelector(config.content, MemoryCatalog(), "UTC").choose_ref(
            "welcome_back", searcher, state_with(searcher_profile), now)
        assert journey["data"]["variant"] == expected_ref.variant == "wb_search"
        assert journey["subject"] == "Find red shoes faster"
        assert (journey["data"]["strategy"], journey["data"]["step"]) == ("reactivation",
                                                                          "push_1")
        assert len(await inbox_messages(redis_url, f"{run}:inbox",
                                        [searcher, browser, promo])) == 2
        # the decision log: one record per outcome, keyed by user, with the rule
        decisions = [DecisionRecord.decode(r.value) for r in
                     await read_topic(kafka_bootstrap, f"{prefix}.decisions")]
        trigger_ids = sorted(t.trigger.trigger_id for t in triggers)
        assert sorted(d.trigger_id for d in decisions
                      if d.outcome == "delivered" and not d.scene.startswith("journey:")) == \
            trigger_ids
        # ... and the worker's record of each fire, with its scene's rule
        assert sorted(d.trigger_id for d in decisions if d.outcome == "triggered") == \
            trigger_ids
        assert {d.rule for d in decisions if d.outcome == "triggered"} <= {"repeat", "arrival",
                                                                          "absence"}
        assert sorted(d.trigger_id for d in decisions if d.rule == "duplicate") == sorted(
            [*trigger_ids, f"{run}-jm"])
        assert all(d.figures.endswith("already decided within 7d") for d in decisions
                   if d.rule == "duplicate")
        assert [d.outcome for d in decisions if d.trigger_id == f"{run}-jm"].count(
            "delivered") == 1
