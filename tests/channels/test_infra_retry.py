"""A Redis that refuses writes is waited out (issue 19): out of memory while
writing a dead letter ended `deliver`; now the record waits, is delivered or
dead-lettered exactly as without the fault, and the fault is counted. The
Waiter itself: back-off, stop, metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import (
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from channels.base import INFRASTRUCTURE_ERRORS
from channels.infra_retry import InfraMetrics, Waiter, fault_kind, is_refusal
from channels.policy.store import MemoryPolicyStore
from tests.channels.content_factories import user_state
from tests.channels.test_kafka_delivery_unit import Harness, trigger_value
from tests.channels.test_poison_records import Buried

OOM = "command not allowed when used memory > 'maxmemory'."


class FullThenFreed(Buried):
    """The record dead-letter, out of memory for ``failures`` writes."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(failures)
        self.refused = asyncio.Event()

    async def add_record(self, source: str, raw: bytes | None, reason: str,
                         detail: str) -> str:
        if self.failures > 0:
            self.failures -= 1
            self.refused.set()
            raise OutOfMemoryError(OOM)
        self.records.append((source, raw, reason, detail))
        return f"{len(self.records)}-0"


class RefusingStore(MemoryPolicyStore):
    """Redis refusing the dedupe claims ``refusals`` times (every user)."""

    def __init__(self, refusals: int, exc: Exception) -> None:
        super().__init__()
        self.refusals = refusals
        self.exc = exc

    async def claim(self, key: str, ttl_ms: int, now_ms: int) -> bool:
        if self.refusals > 0:
            self.refusals -= 1
            raise self.exc
        return await super().claim(key, ttl_ms, now_ms)


@pytest.mark.parametrize("exc", [OutOfMemoryError(OOM), ReadOnlyError("READONLY replica"),
                                 ClusterDownError("CLUSTERDOWN"), TryAgainError("TRYAGAIN"),
                                 MovedError("3999 127.0.0.1:6381")])
def test_a_redis_refusal_is_an_infrastructure_error(exc: Exception) -> None:
    assert isinstance(exc, INFRASTRUCTURE_ERRORS)
    assert is_refusal(exc)


def test_a_plain_response_error_is_the_records() -> None:
    exc = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert not isinstance(exc, INFRASTRUCTURE_ERRORS) and not is_refusal(exc)
    assert fault_kind(exc) == "other"
    assert fault_kind(OutOfMemoryError(OOM)) == "oom"
    assert fault_kind(RedisConnectionError("gone")) == "connection"


async def test_a_full_redis_under_a_dead_letter_waits_then_buries_it() -> None:
    h = Harness()
    buried = FullThenFreed(failures=12)  # more than max_attempts: still no skip, no exit
    h.delivery.dead_letter = buried
    h.delivery.max_attempts = 3
    h.delivery.waiter.max_s = 0.02
    records = [h.record("p.triggers", b"{\"truncated"),
               h.record("p.triggers", trigger_value("a1", user_state("a1", "search_driven")))]
    await h.delivery.handle_batch({("p.triggers", 0): records})
    assert [(r[0], r[2]) for r in buried.records] == [("p.triggers/0/0", "invalid_json")]
    assert [m.user_id for m in h.sender.messages] == ["a1"]
    assert h.consumer.commits == [{("p.triggers", 0): 2}]
    assert h.metric("scenetrigger_infra_errors_total", component="deliver", fault="oom") == 12
    assert h.metric("scenetrigger_infra_waiting", component="deliver") == 0
    assert h.metric("scenetrigger_deliver_malformed_total", reason="invalid_json") == 1


async def test_a_refused_write_is_delivered_as_without_the_fault_not_dead_lettered() -> None:
    h = Harness(store=RefusingStore(10, ReadOnlyError("READONLY You can't write")))
    buried = Buried()
    h.delivery.dead_letter = buried
    h.delivery.max_attempts = 3  # a connection error would dead-letter after 3
    h.delivery.waiter.max_s = 0.02
    records = [h.record("p.triggers", trigger_value(u, user_state(u, "search_driven")))
               for u in ("a1", "a2")]
    await h.delivery.handle_batch({("p.triggers", 0): records})
    assert buried.records == []
    assert [m.user_id for m in h.sender.messages] == ["a1", "a2"]
    assert h.consumer.commits == [{("p.triggers", 0): 2}]
    assert h.metric("scenetrigger_infra_errors_total", component="deliver",
                    fault="readonly") == 10


async def test_a_stop_while_waiting_commits_nothing_of_the_record() -> None:
    h = Harness()
    full = h.delivery.dead_letter = FullThenFreed(failures=10**9)
    records = [h.record("p.triggers", b"[1"), h.record("p.triggers", b"[2")]
    h.delivery.waiter.base_s = h.delivery.waiter.max_s = 60.0  # only the stop ends the wait
    task = asyncio.create_task(h.delivery.handle_batch({("p.triggers", 0): records}))
    await full.refused.wait()  # the consumer waits in the back-off from here on
    assert h.metric("scenetrigger_infra_waiting", component="deliver") == 1
    h.delivery.stop()
    await task
    assert h.consumer.commits == []  # the records come again from the committed offset
    assert h.metric("scenetrigger_infra_waiting", component="deliver") == 0


async def test_waiter_backs_off_doubling_to_the_ceiling_and_returns_the_result() -> None:
    slept: list[float] = []
    faults: list[Exception] = [OutOfMemoryError(OOM)] * 5 + [RedisConnectionError("x")]

    async def op() -> str:
        if faults:
            raise faults.pop(0)
        return "done"

    registry = CollectorRegistry()
    waiter = Waiter("journeys", InfraMetrics.on(registry), base_s=1.0, max_s=8.0)

    async def fake_sleep(seconds: float) -> bool:
        slept.append(seconds)
        return False

    waiter._stopped_within = fake_sleep  # type: ignore[method-assign]
    assert await waiter.run(op, "a tag write") == "done"
    assert slept == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert InfraMetrics.on(registry) is waiter.metrics  # one set per registry
    assert registry.get_sample_value("scenetrigger_infra_errors_total",
                                     {"component": "journeys", "fault": "oom"}) == 5


async def test_waiter_does_not_wait_out_a_records_error() -> None:
    async def op() -> None:
        raise ResponseError("WRONGTYPE")

    with pytest.raises(ResponseError):
        await Waiter("serve").run(op, "x")
