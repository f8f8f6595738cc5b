"""Batched event records without a broker: the partitioner, the batcher's
bounds and order, the record decoding, and the worker taking a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from agents.app import SceneWorker
from agents.record_batching import BatchLimits, RecordBatcher, encode_batch, partition_for
from agents.stored_state import pack_state, position, unpack_state
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import (
    MAX_EVENTS_PER_RECORD,
    REASON_INVALID_JSON,
    REASON_MISSING_FIELD,
    REASON_NOT_OBJECT,
    REASON_WRONG_TYPE,
    Event,
    decode_event_record,
)

# Kafka's own murmur2 test vectors (Java ints: signed 32 bits).
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 4, 12])
def test_partition_is_kafkas_default_for_the_key(partitions: int) -> None:
    for key, java_hash in KAFKA_MURMUR2.items():
        # Utils.toPositive(Utils.murmur2(key)) % numPartitions
        assert partition_for(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions
    assert partition_for(b"21", 4) == 0 and partition_for(b"abc", 4) == 3


class Sent:
    """The batcher's send: records (partition, key, value); returns None (stored)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bytes | None, bytes]] = []

    async def __call__(self, partition: int, key: bytes | None, value: bytes) -> None:
        self.records.append((partition, key, value))

    def events(self) -> list[tuple[int, Mapping[str, Any]]]:
        out = []
        for partition, _, value in self.records:
            for item in decode_event_record(value):
                assert isinstance(item, Event)
                out.append((partition, item.fields))
        return out


def _event(user: str, ts: int) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "ts": ts, "type": "view"})


async def test_batches_by_partition_keep_each_users_order_within_the_bounds() -> None:
    sent = Sent()
    batcher = RecordBatcher(sent, 4, BatchLimits(max_events=7, max_bytes=10_000, linger_ms=0))
    users = [f"u{n}" for n in range(10)]
    for ts in range(100):
        await batcher.add(*_event(users[ts % 10], ts))
    await batcher.flush()
    got = sent.events()
    assert len(got) == 100 and sum(batcher.events.values()) == 100
    for partition, fields in got:  # each event on its user's Kafka partition
        assert partition == partition_for(fields["user_id"].encode(), 4)
    for user in users:  # a user's events in the order added
        times = [f["ts"] for _, f in got if f["user_id"] == user]
        assert times == sorted(times) and len(times) == 10
    sizes = [len(decode_event_record(v)) for _, _, v in sent.records]
    assert max(sizes) == 7 and batcher.records == len(sent.records) < 100


async def test_byte_bound_and_a_record_of_one_is_a_plain_keyed_event() -> None:
    sent = Sent()
    _, value = _event("same", 1)
    batcher = RecordBatcher(sent, 4, BatchLimits(max_events=500, max_bytes=3 * (len(value) + 1),
                                                 linger_ms=0))
    for ts in range(7):
        await batcher.add(*_event("same", ts))
    await batcher.flush()
    assert [len(decode_event_record(v)) for _, _, v in sent.records] == [3, 3, 1]
    assert [k for _, k, _ in sent.records] == [None, None, b"same"]
    assert orjson.loads(sent.records[-1][2]) == {"user_id": "same", "ts": 6, "type": "view"}


async def test_linger_seals_a_record_without_more_events() -> None:
    sent = Sent()
    batcher = RecordBatcher(sent, 4, BatchLimits(max_events=500, linger_ms=5))
    done = await batcher.add(*_event("a", 1))
    await batcher.add(*_event("a", 2))
    assert not sent.records
    await asyncio.wait_for(done, 2)
    assert len(sent.records) == 1 and len(decode_event_record(sent.records[0][2])) == 2


async def test_a_failed_send_fails_the_events_of_its_record() -> None:
    async def refuse(partition: int, key: bytes | None, value: bytes) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(OSError("broker gone"))
        return future

    batcher = RecordBatcher(refuse, 2, BatchLimits(max_events=2, linger_ms=0))
    first = await batcher.add(*_event("a", 1))
    await batcher.add(*_event("a", 2))
    with pytest.raises(OSError):
        await first
    with pytest.raises(OSError):
        await batcher.flush()


def test_limits_are_checked() -> None:
    for bad in ({"max_events": 0}, {"max_events": MAX_EVENTS_PER_RECORD + 1},
                {"max_bytes": 0}, {"linger_ms": -1}):
        with pytest.raises(SceneTriggerError):
            BatchLimits(**bad)


def test_a_record_is_one_event_or_an_array_each_decoded_alone() -> None:
    one = orjson.dumps({"user_id": "a", "ts": 1, "type": "view"})
    [event] = decode_event_record(one)
    assert isinstance(event, Event) and event.user_id == "a"
    batch = encode_batch([one, b'{"user_id": "b", "type": "view"}', b'"text"',
                          b'{"user_id": "c", "ts": "2", "type": "cart"}', one])
    items = decode_event_record(batch)
    reasons = [i.reason if isinstance(i, EventRejected) else i.user_id for i in items]
    assert reasons == ["a", REASON_MISSING_FIELD, REASON_NOT_OBJECT, REASON_WRONG_TYPE, "a"]
    [broken] = decode_event_record(b'[{"user_id": "a"')
    assert isinstance(broken, EventRejected) and broken.reason == REASON_INVALID_JSON
    [scalar] = decode_event_record(b"17")
    assert isinstance(scalar, EventRejected) and scalar.reason == REASON_NOT_OBJECT


def test_positions_order_records_then_events_and_old_offsets_cover_their_record() -> None:
    assert position(7, 0) < position(7, 499) < position(8, 0)
    raw = b"[]"
    assert unpack_state(pack_state(position(9, 3), raw)) == (position(9, 3), raw)
    # Written before records carried batches: offset 9 applied means all of record 9.
    legacy = b"\x01" + (9).to_bytes(8, "big", signed=True) + raw
    applied, _ = unpack_state(legacy)
    assert position(9, 65_535) == applied and position(10, 0) > applied


# -- the worker taking a batch record ------------------------------------------

class FakeMessage:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value = value
        self.key = None
        self.topic = "t.events"
        self.partition = 0
        self.offset = offset
        self.timestamp = None


CONFIG = """
scenes:
  rv:
    kind: repeat
    when: {type: view}
    per: product_id
    count: 2
    within: 1h
"""


def _worker(tmp_path: Path, clock: Literal["event", "wall"] = "event",
            ) -> tuple[SceneWorker, list[tuple[str, int | None, bytes]]]:
    from agents.settings import WorkerSettings
    from config.loader import load_config_text

    worker = SceneWorker(WorkerSettings(config=load_config_text(CONFIG), store="memory",
                                        state_dir=tmp_path, clock=clock))
    dead: list[tuple[str, int | None, bytes]] = []

    def dead_letter(message: Any, reason: str, _detail: str, _now: int,
                    index: int | None = None) -> None:
        dead.append((reason, index, message.value))

    worker._dead_letter = dead_letter  # type: ignore[method-assign,assignment]
    fired: list[Any] = []
    worker._emit = lambda _h, trigs, _now, _t: fired.extend(trigs)  # type: ignore[method-assign,assignment]
    worker.fired = fired  # type: ignore[attr-defined]
    return worker, dead


def _view(user: str, ts: int) -> bytes:
    return orjson.dumps({"user_id": user, "ts": ts, "type": "view", "product_id": "p"})


def test_a_bad_event_of_a_batch_is_dead_lettered_alone_with_its_index(tmp_path: Path) -> None:
    worker, dead = _worker(tmp_path)
    host = worker.host(0)
    record = encode_batch([_view("a", 1), b'{"user_id": "a", "type": "view"}', _view("a", 2)])
    assert worker._take_record(host, FakeMessage(record, 5), 0) == 3
    assert [(reason, index) for reason, index, _ in dead] == [(REASON_MISSING_FIELD, 1)]
    assert len(worker.fired) == 1  # type: ignore[attr-defined]  # both good views applied
    assert host.store.applied_offset("a") == position(5, 2)


def test_an_event_too_far_ahead_of_the_wall_clock_is_dead_lettered(tmp_path: Path) -> None:
    """Issue 19: a view stamped year 9999 fired and held its cooldown till then."""
    worker, dead = _worker(tmp_path, "wall")
    host = worker.host(0)
    now = 1_700_000_000_000
    record = encode_batch([_view("a", 253_402_300_799_000), _view("a", now),
                           _view("a", now + 3_600_001), _view("a", now + 60_000)])
    assert worker._take_record(host, FakeMessage(record, 5), now) == 4
    assert [(reason, index) for reason, index, _ in dead] == [("future_ts", 0), ("future_ts", 2)]
    assert [t.ts for t in worker.fired] == [now + 60_000]  # type: ignore[attr-defined]


def test_a_redone_record_applies_nothing_twice(tmp_path: Path) -> None:
    worker, dead = _worker(tmp_path)
    host = worker.host(0)
    # Users a and b; the state of a was written after its first event only
    # (a crash mid-batch): redoing the record applies the rest, once.
    record = encode_batch([_view("a", 1), _view("b", 1), _view("a", 2), _view("b", 2)])
    host.on_event(decode_event_record(_view("a", 1))[0], position(3, 0), 0)  # type: ignore[arg-type]
    worker._take_record(host, FakeMessage(record, 3), 0)
    fired = worker.fired  # type: ignore[attr-defined]
    assert sorted(t.user_id for t in fired) == ["a", "b"]
    worker._take_record(host, FakeMessage(record, 3), 0)  # redelivered whole
    assert len(fired) == 2 and not dead
    duplicates = worker.metrics.registry.get_sample_value(
        "scenetrigger_events_total", {"result": "duplicate", "reason": ""})
    assert duplicates == 5
