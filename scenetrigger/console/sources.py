"""Where the console's records come from (each an asyncio task feeding a
:class:`scenetrigger.console.state.ConsoleState`):

- :func:`run_embedded`: the embedded mode, a recorded stream replayed at a
  pace (events per second) through the engine and the delivery pipeline
  (dry-run), whose decision log is the console state;
- :func:`run_kafka`: a live deployment, its events, triggers, decisions and
  audiences topics read from their beginning and then followed (no consumer
  group: the console disturbs no one), and the dead-letter topic's size. An
  audiences tombstone (an erasure) drops what the console kept of its key.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from channels.feedback.decisions import DecisionRecord
from config.models import AppConfig
from scenetrigger.console.state import ConsoleState
from scenetrigger.runtime.embedded import TriggerRecord
from triggers.audiences.record import AudienceChange, AudienceTombstone, decode_topic_record
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import Event, Trigger

log = logging.getLogger("scenetrigger.console.app")


async def run_embedded(state: ConsoleState, config: AppConfig, path: str, fmt: str = "auto",
                       rate: float = 200.0, catalog_file: str | None = None) -> None:
    from channels.assembly import file_catalog, open_delivery
    from scenetrigger.runtime.replay import new_host

    host = new_host(config, profiles=True)
    engine = host.engine
    delivery = open_delivery(config, "dry-run", catalog=file_catalog(catalog_file),
                             journeys=config.strategies.all_journeys().values())
    pipeline = delivery.pipeline
    pipeline.decisions = state
    state.states = engine.store.get
    state.source = f"replay of {path} at {rate:g} events/s"
    journeys = _journeys(state, config, pipeline, engine)

    async def deliver(fired: list[Any], now_ms: int) -> None:
        if journeys is not None:  # due journey steps (waits) before this moment's triggers
            await journeys.tick(now_ms)
        for trig in fired:
            state.trigger(trig)
            await pipeline.release_due(trig.ts, engine.store.get)
            await pipeline.deliver(trig, engine.store.get(trig.user_id), trig.ts)
            if journeys is not None:  # the strategies on the replay's clock
                await journeys(TriggerRecord(trig, "", trig.ts, "event"))

    async with delivery:
        await _replay(state, config, path, fmt, rate, host, deliver)
    state.done = True


def _journeys(state: ConsoleState, config: AppConfig, pipeline: Any, engine: Any) -> Any:
    """The config's strategies, their send steps through the same pipeline; every
    step a decision record (as ``scenetrigger journeys`` writes them). No
    simulated opens: the console replays recorded behaviour only."""
    if not config.strategies.all_journeys():
        return None
    from strategies.decisions import journey_record
    from strategies.embedded import JourneySubscriber

    return JourneySubscriber(config, lambda action: state.write(journey_record(action)),
                             states=engine.store.get, delivery=pipeline)


async def _replay(state: ConsoleState, config: AppConfig, path: str, fmt: str, rate: float,
                  host: Any, deliver: Any) -> None:
    from scenetrigger.runtime.sources import open_input, pick_format, read_events

    engine, audiences = host.engine, host.audiences
    if audiences is not None:  # enter / exit records for the return per channel
        audiences.sink = state.membership

    started = time.monotonic()
    with open_input(path) as (stream, _size):
        chosen, lines = pick_format(fmt, stream, path)
        taken = 0
        for _number, item in read_events(lines, chosen, config.engine.max_line_bytes,
                                         config.id_limits()):
            if type(item) is EventRejected:
                state.rejected(item.reason)
                continue
            assert isinstance(item, Event)
            # with audiences the host evaluates them around the engine (as replay does)
            fired = engine.handle(item) if audiences is None else host.take(item)
            state.event(item)
            if audiences is not None:
                audiences.flush()
            await deliver(fired, item.ts)
            taken += 1
            ahead = taken / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            elif not taken % 256:
                await asyncio.sleep(0)  # let the page be served
    await deliver(engine.advance(engine.clock) if audiences is None
                  else host.advance(engine.clock), engine.clock)
    if audiences is not None:
        audiences.flush()


async def run_kafka(state: ConsoleState, config: AppConfig, bootstrap: str,
                    prefix: str | None, redis_url: str | None = None,
                    poll_s: float = 1.0) -> None:
    from aiokafka import TopicPartition

    from agents.faust_compat import refresh_metadata
    from agents.kafka_clients import started_reader
    from agents.topics import topic_name
    from triggers.events import decode_event_record
    from triggers.wire import decode_trigger

    names = events, triggers, decisions, audiences = tuple(
        topic_name(prefix, n) for n in ("events", "triggers", "decisions", "audiences"))
    dead = f"{prefix}.dead-letters" if prefix else "scenetrigger-deadletter"
    state.source = f"Kafka {bootstrap}, topics {events}, {triggers}, {decisions}, {audiences}"
    consumer = await started_reader(bootstrap)  # probed: a wrong service fails in seconds
    dead_letters = None
    receipts = None
    if redis_url:
        from channels.redis_client import redis_client
        from channels.transports.deadletter import DeadLetterStore

        dead_letters = DeadLetterStore(redis_client(redis_url, decode_responses=True))
        receipts = ErasureCheck(dead_letters.redis, config.delivery.redis_prefix)
    try:
        assigned: set[Any] = set()
        caught_up = False
        limits = config.id_limits()
        while True:
            wanted = set()
            for topic in (*names, dead):
                for p in consumer.partitions_for_topic(topic) or ():
                    wanted.add(TopicPartition(topic, p))
            if wanted - assigned:
                assigned = wanted
                consumer.assign(sorted(assigned, key=lambda tp: (tp.topic, tp.partition)))
                news = [tp for tp in assigned if tp.topic != dead]
                if news:
                    await consumer.seek_to_beginning(*news)
            if not assigned:
                await refresh_metadata(consumer)
                await asyncio.sleep(poll_s)
                continue
            batch = await consumer.getmany(timeout_ms=int(poll_s * 1000))
            taken = [item for tp, records in batch.items() for record in records
                     for item in _decode(tp.topic, record.key, record.value, names,
                                         config, limits, decode_event_record, decode_trigger)]
            if receipts is not None:  # before the records: an erased user's are dropped
                await receipts.check(state, {item.user_id for item in taken})
            for item in taken:
                _take(state, item)
            dead_parts = [tp for tp in assigned if tp.topic == dead]
            if dead_parts:
                ends = await consumer.end_offsets(dead_parts)
                starts = await consumer.beginning_offsets(dead_parts)
                state.dead_letters["dead-letter topic"] = sum(
                    ends[tp] - starts[tp] for tp in dead_parts)
            if dead_letters is not None:
                try:
                    state.delivery_dead_letters = await dead_letters.count()
                except Exception:  # Redis away: keep the last count
                    log.debug("dead-letter count failed", exc_info=True)
            if not batch:
                if not caught_up:  # the topics' backlog read: the views are current
                    caught_up = True
                    print(f"console: caught up with the topics ({state.totals['events']:,} "
                          "events read); following them live", file=sys.stderr, flush=True)
                await refresh_metadata(consumer)
    finally:
        await consumer.stop()
        if dead_letters is not None:
            await dead_letters.redis.aclose()


class ErasureCheck:
    """Which users the records read belong to were erased (their receipts,
    read once per user: :func:`channels.erasure_receipts.erased_at`), so the
    console drops their records up to the erasure."""

    MAX_CHECKED = 100_000  # users whose receipt was read; past it, read again

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.checked: set[str] = set()

    async def check(self, state: ConsoleState, users: set[str]) -> None:
        from channels.erasure_receipts import erased_at

        new = users - self.checked
        if not new:
            return
        if len(self.checked) + len(new) > self.MAX_CHECKED:
            self.checked.clear()
        try:
            state.erased.update(await erased_at(self.redis, self.prefix, new))
        except Exception:  # Redis away: check these users again with the next batch
            log.warning("erasure receipts unreadable", exc_info=True)
            return
        self.checked |= new


Taken = Event | Trigger | DecisionRecord | AudienceChange | AudienceTombstone


def _decode(topic: str, key: bytes | None, value: bytes | None, names: tuple[str, ...],
            config: AppConfig, limits: Any, decode_event: Any, decode_trigger: Any
            ) -> list[Taken]:
    events, triggers, decisions, audiences = names
    try:
        if topic == audiences:  # enter / exit for the return per channel; null: erased
            return [decode_topic_record(key, value)]
        if topic == events:  # one event or a batch of them per record
            return [item for item in decode_event(value or b"", config.engine.max_line_bytes,
                                                  limits) if type(item) is Event]
        if topic == triggers:
            return [decode_trigger(value).trigger]
        if topic == decisions:
            return [DecisionRecord.decode(value or b"")]
    except (SceneTriggerError, ValueError, KeyError, TypeError):
        pass  # the worker dead-letters bad events; other bad records are skipped
    return []


def _take(state: ConsoleState, item: Taken) -> None:
    if type(item) is Event:
        state.event(item)
    elif type(item) is Trigger:
        state.trigger(item)
    elif type(item) is AudienceChange:
        state.membership(item)
    elif type(item) is AudienceTombstone:
        state.tombstone(item.audience, item.user_id)
    else:
        assert isinstance(item, DecisionRecord)
        state.write(item)
