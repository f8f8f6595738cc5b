"""Producer logic without a broker: a list-backed Sink behind the same protocol."""

from __future__ import annotations

import orjson

from agents.producer import LastLine, ProduceTopics, RateLimiter, produce_records
from agents.record_batching import partition_for
from scenetrigger.runtime.sources import read_jsonl


class ListSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = 0
        self.partitions: list[int | None] = []

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None = None) -> None:
        self.sent.append((topic, key, value))
        self.partitions.append(partition)

    async def flush(self) -> None:
        self.flushed += 1


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(round(delay, 9))
        self.now += delay


async def test_rate_limiter_spaces_calls_evenly() -> None:
    fake = FakeTime()
    limiter = RateLimiter(4.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        await limiter.wait()
    assert fake.sleeps == [0.25, 0.25, 0.25, 0.25]
    assert fake.now == 101.0


async def test_rate_limiter_does_not_burst_after_a_pause() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10.0, clock=fake.clock, sleep=fake.sleep)
    await limiter.wait()
    fake.now += 5.0  # the caller was slow: no credit is saved up
    await limiter.wait()
    await limiter.wait()
    assert fake.sleeps == [0.1]


async def test_rate_limiter_sleeps_in_batches_at_high_rates() -> None:
    fake = FakeTime()
    limiter = RateLimiter(1000.0, clock=fake.clock, sleep=fake.sleep, min_sleep_s=0.005)
    for _ in range(11):
        await limiter.wait()
    # calls 1-5 owe 0..4 ms (no sleep); call 6 owes 5 ms and sleeps it off, ...
    assert fake.sleeps == [0.005, 0.005]
    assert abs(fake.now - 100.010) < 1e-9


async def test_records_go_to_events_and_rejects_to_dead_letters_in_order() -> None:
    lines = LastLine([
        b'{"user_id": "u1", "ts": 1, "type": "view"}\n',
        b"oops\n",
        b'{"user_id": 5, "ts": 2, "type": "cart"}\n',
    ])
    sink = ListSink()
    topics = ProduceTopics(events="ev", dead_letters="dl")
    progress: list[int] = []
    sent, rejected, reasons = await produce_records(
        read_jsonl(lines), sink, topics=topics, source="produce:x", raw_of=lambda: lines.last,
        on_progress=progress.append, progress_every=2)
    assert (sent, rejected, dict(reasons)) == (2, 1, {"invalid_json": 1})
    # Rejects go at once; events wait for their records (one per partition
    # here, each of one event: a plain record keyed by user_id).
    assert [(t, k) for t, k, _ in sink.sent] == [("dl", None), ("ev", b"u1"), ("ev", b"5")]
    assert sink.partitions[1:] == [partition_for(b"u1", 4), partition_for(b"5", 4)]
    assert orjson.loads(sink.sent[2][2]) == {"user_id": 5, "ts": 2, "type": "cart"}
    dead = orjson.loads(sink.sent[0][2])
    assert (dead["reason"], dead["where"], dead["raw"], dead["source"]) == (
        "invalid_json", 2, "oops", "produce:x")
    assert sink.flushed == 1
    assert progress == [2]


async def test_an_event_too_far_ahead_of_the_clock_is_dead_lettered() -> None:
    """Issue 19: the rule the worker and the collector apply (``future_ts``)."""
    now = 1_700_000_000_000
    far = b'{"user_id": "u1", "ts": 253402300799000, "type": "view"}\n'
    lines = LastLine([far, b'{"user_id": "u1", "ts": %d, "type": "view"}\n' % (now + 3_600_000)])
    sink = ListSink()
    topics = ProduceTopics(events="ev", dead_letters="dl")
    sent, rejected, reasons = await produce_records(
        read_jsonl(lines), sink, topics=topics, raw_of=lambda: lines.last, clock=lambda: now)
    assert (sent, rejected, dict(reasons)) == (1, 1, {"future_ts": 1})
    dead = orjson.loads(sink.sent[0][2])
    assert (sink.sent[0][0], dead["reason"], dead["where"]) == ("dl", "future_ts", 1)
    again = ListSink()
    got = await produce_records(read_jsonl(LastLine([far])), again, topics=topics,
                                clock=lambda: now, max_future_ms=None)  # --max-future off
    assert got[:2] == (1, 0) and orjson.loads(again.sent[0][2])["ts"] == 253402300799000
