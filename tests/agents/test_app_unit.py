"""Unit tests of the worker's pieces without Kafka: the partition store and
host over a dict "table", the tick sweep, records, metrics and the app factory."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError

from agents.app import (
    EXIT_TRIGGER_SEND_FAILED,
    SceneWorker,
    create_app,
)
from agents.checkpoint import Outbox
from agents.engine_host import PartitionHost
from agents.metrics import WorkerMetrics
from agents.partition_store import PartitionStore
from agents.settings import TopicNames, WorkerSettings, WorkerSettingsError
from agents.stored_state import NO_OFFSET, is_reserved, pack_state, unpack_state
from agents.timers import Tick, decode_tick, due_ticks
from agents.topics import dead_letter_record
from config.loader import load_config_text
from config.models import AppConfig
from scenetrigger.cli.run.worker import faust_broker_url
from triggers.errors import StateDecodeError
from triggers.events import Event, Trigger
from triggers.profile import Profile
from triggers.state import UserState
from triggers.wire import decode_trigger, trigger_record

CONFIG = """
scenes:
  rv:
    kind: repeat
    when: {type: view}
    per: product_id
    count: 2
    within: 10m
  abandon:
    kind: absence
    start: {type: cart}
    cancel: {type: purchase}
    after: 2s
  arrive:
    kind: arrival
    when: {type: cart}
"""


def config() -> AppConfig:
    return load_config_text(CONFIG)


def ev(user: str, ts: int, etype: str, **fields: Any) -> Event:
    return Event(user, ts, etype, {"user_id": user, "ts": ts, "type": etype, **fields})


def make_host(table: dict[bytes, bytes], event_clock: bool = True,
              cache: int = 50_000) -> PartitionHost:
    cfg = config()
    store = PartitionStore(table, lambda: list(table.items()), cache)
    host = PartitionHost.build(0, store, cfg.scene_list(), cfg.engine.limits(),
                               cfg.engine.input_rules(), "event" if event_clock else "wall")
    host.rebuild()
    return host


# -- envelope -----------------------------------------------------------------

def test_envelope_round_trip_and_bare_state() -> None:
    state = UserState()
    state.max_ts = 5
    raw = state.encode()
    assert unpack_state(pack_state(42, raw)) == (42, raw)
    assert unpack_state(raw) == (NO_OFFSET, raw)  # a bare UserState value
    with pytest.raises(StateDecodeError):
        unpack_state(b"\x07junk")


# -- store and host -------------------------------------------------------------

def test_writes_are_staged_until_flush() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    fired = host.on_event(ev("u1", 1000, "view", product_id="p"), 0, 0)
    assert fired == []
    assert table == {}  # nothing durable before the agent flushes
    assert host.store.dirty
    assert host.store.flush() == 1
    offset, raw = unpack_state(table[b"u1"])
    assert offset == 0
    assert UserState.decode(raw).max_ts == 1000
    assert host.store.users == 1
    assert host.store.bytes == len(table[b"u1"])


def test_redelivered_event_is_not_applied_twice() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    view = ev("u1", 1000, "view", product_id="p")
    assert host.on_event(view, 7, 0) == []
    host.store.flush()
    # A restart: a new host over the same table sees offset 7 already applied.
    again = make_host(table)
    assert again.on_event(view, 7, 0) is None
    # Applying it twice would have made a window of 2 and fired the repeat scene.
    fired = again.on_event(ev("u1", 2000, "view", product_id="p"), 8, 0)
    assert fired == [Trigger("rv", "u1", "p", 2000)]


def test_rebuild_restores_timers_and_event_clock() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    host.on_event(ev("u1", 1000, "cart"), 0, 0)
    host.on_event(ev("u2", 1500, "view", product_id="x"), 1, 0)
    host.store.flush()
    fresh = make_host(table)
    assert fresh.engine.clock == 1500
    assert [(t.scene, t.user_id, t.deadline) for t in fresh.engine.pending_timers()] == [
        ("abandon", "u1", 3000)]
    assert fresh.store.users == 2
    assert fresh.store.bytes == sum(len(v) for k, v in table.items() if not is_reserved(k))
    # The event clock passing the deadline fires the absence timer first.
    fired = fresh.on_event(ev("u3", 3001, "view", product_id="y"), 2, 0)
    assert fired == [Trigger("abandon", "u1", None, 3000)]


def test_wall_clock_host_fires_on_tick_without_events() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table, event_clock=False)
    assert host.on_event(ev("u1", 10_000, "cart"), 0, now_ms=10_000) == [
        Trigger("arrive", "u1", None, 10_000)]
    host.store.flush()
    assert host.due(11_000) is None
    assert host.due(12_000) is None  # strictly greater than the deadline
    assert host.due(12_001) == 12_000
    assert host.on_tick(12_001) == [Trigger("abandon", "u1", None, 12_000)]
    host.store.flush()
    assert host.due(99_999) is None
    assert unpack_state(table[b"u1"])[0] == 0  # a timer keeps the user's event offset


def test_event_clock_tick_fires_only_timers_behind_the_clock() -> None:
    host = make_host({})
    host.on_event(ev("u1", 10_000, "cart"), 0, 0)
    host.on_event(ev("u2", 20_000, "view", product_id="p"), 1, 0)
    host.on_event(ev("u3", 1_000, "cart"), 2, 0)  # late: its deadline is behind the clock
    assert host.due(0) == 3_000
    assert host.on_tick(999_999) == [Trigger("abandon", "u3", None, 3_000)]
    assert host.due(0) is None


def test_cache_is_bounded_and_reads_through_the_table() -> None:
    table: dict[bytes, bytes] = {}
    host = make_host(table, cache=16)
    for i in range(100):
        host.on_event(ev(f"u{i}", 1000 + i, "view", product_id="p"), i, 0)
        host.store.flush()
    assert len(host.store._cache) <= 16
    assert host.store.users == 100
    # An evicted user is read back from the table.
    assert host.on_event(ev("u0", 5000, "view", product_id="p"), 200, 0) == [
        Trigger("rv", "u0", "p", 5000)]
    assert dict(host.store.items()).keys() == {f"u{i}" for i in range(100)}


class CountingTable(dict[bytes, bytes]):
    """A dict table that counts reads."""

    reads = 0

    def get(self, key: bytes, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def test_a_complete_recovery_scan_spares_the_table_reads_of_new_users() -> None:
    table = CountingTable()
    host = make_host(table, cache=16)
    for i in range(10):
        host.on_event(ev(f"u{i}", 1000 + i, "view", product_id="p"), i, 0)
    host.store.flush()
    restarted = make_host(table, cache=16)  # the scan fits in the cache: every user known
    table.reads = 0
    for i in range(10, 16):  # new users
        restarted.on_event(ev(f"u{i}", 2000, "view", product_id="p"), 100 + i, 0)
    assert restarted.on_event(ev("u0", 5000, "view", product_id="p"), 200, 0) == [
        Trigger("rv", "u0", "p", 5000)]  # a stored user, from the scan
    assert table.reads == 0
    for i in range(16, 40):  # past the cache: evicted users must come from the table again
        restarted.on_event(ev(f"u{i}", 2000, "view", product_id="p"), 100 + i, 0)
        restarted.store.flush()
    assert restarted.on_event(ev("u1", 5000, "view", product_id="p"), 300, 0) == [
        Trigger("rv", "u1", "p", 5000)]
    assert table.reads > 0


def test_reconfigure_keeps_state() -> None:
    host = make_host({})
    host.on_event(ev("u1", 1000, "view", product_id="p"), 0, 0)
    new = load_config_text(CONFIG.replace("count: 2", "count: 3"))
    host.reconfigure(new.scene_list(), new.engine.limits())
    assert host.on_event(ev("u1", 1100, "view", product_id="p"), 1, 0) == []
    assert host.on_event(ev("u1", 1200, "view", product_id="p"), 2, 0) == [
        Trigger("rv", "u1", "p", 1200)]


def test_reconfigure_reshapes_stored_state_and_keeps_offsets() -> None:
    """A `per` change drops the scene's windows of every user, also users only
    in the table (beyond the cache), and keeps each user's applied offset."""
    table: dict[bytes, bytes] = {}
    host = make_host(table)
    for n in range(20):
        host.on_event(ev(f"u{n}", 1000, "view", product_id="p"), 100 + n, 0)
    host.store.flush()
    cold = make_host(table, cache=16)  # 4 users stay in the table only
    new = load_config_text(CONFIG.replace("per: product_id", "per: category"))
    cold.reconfigure(new.scene_list(), new.engine.limits())
    assert cold.store.flush() == 20
    for n in range(20):
        offset, raw = unpack_state(table[f"u{n}".encode()])
        assert offset == 100 + n
        assert "rv" not in UserState.decode(raw).windows


# -- sweep and ticks ----------------------------------------------------------

def test_due_ticks_one_in_flight_per_partition() -> None:
    host = make_host({}, event_clock=False)
    host.on_event(ev("u1", 1_000, "cart"), 0, now_ms=1_000)
    hosts = {0: host}
    assert due_ticks(hosts, 2_000) == []
    assert due_ticks(hosts, 3_001) == [Tick(0, 3_000, 3_001)]
    assert due_ticks(hosts, 3_500) == []  # one already on its way
    assert due_ticks(hosts, 3_001 + 5_000) == [Tick(0, 3_000, 8_001)]  # lost: sent again
    host.on_tick(8_100)
    assert due_ticks(hosts, 9_000) == []


def test_tick_codec_never_raises() -> None:
    tick = Tick(3, 100, 200)
    assert decode_tick(tick.encode()) == tick
    for junk in (None, b"", b"{", b"[]", b'{"partition": "x"}', b"null"):
        assert decode_tick(junk) is None


# -- records ------------------------------------------------------------------

class FakeMessage:
    def __init__(self, value: bytes | None) -> None:
        self.value = value
        self.key = b"k"
        self.topic = "t.events"
        self.partition = 2
        self.offset = 17


def test_trigger_record_has_contract_fields_and_id() -> None:
    trig = Trigger("rv", "u1", "p", 5)
    rec = trigger_record(trig, 99)
    assert rec == {"scene": "rv", "user_id": "u1", "key": "p", "ts": 5,
                   "trigger_id": trig.trigger_id, "fired_at_ms": 99}
    profile = Profile()
    profile.searches = 4
    with_profile = trigger_record(trig, 99, profile)
    assert with_profile == {**rec, "profile": profile.to_wire()}


class FakeProducer:
    """``send`` of Faust's producer: records each value by topic, returns a done future."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes, bytes]]] = {}

    async def send(self, topic: str, key: bytes, value: bytes, partition: None,
                   timestamp: None, headers: None) -> FakeFuture:
        self.sent.setdefault(topic, []).append((key, value))
        return FakeFuture(True)


async def test_emitted_trigger_carries_the_users_profile_at_fire_time(tmp_path: Path) -> None:
    worker = SceneWorker(settings(tmp_path, store="memory"))
    producer = FakeProducer()
    worker.outbox = Outbox(lambda: producer)
    host = make_host({})
    host.on_event(ev("u1", 1000, "search", query="red shoes"), 0, 0)
    host.on_event(ev("u1", 2000, "view", product_id="p", tz="Europe/Paris"), 1, 0)
    fired = host.on_event(ev("u1", 3000, "view", product_id="p"), 2, 0)
    assert fired == [Trigger("rv", "u1", "p", 3000)]
    worker._emit(host, fired, 4000, None)
    assert not producer.sent and len(worker.outbox.queued) == 2  # sent after the message
    await worker.outbox.send()
    assert len(host.pending.futures) == 2  # the batch settles once both are acked
    [(key, value)] = producer.sent[worker.settings.topics.triggers]
    assert key == b"u1"
    record = orjson.loads(value)
    # the contract fields and id stay as they were; journeys still read the record
    assert {k: record[k] for k in ("scene", "user_id", "key", "ts", "trigger_id",
                                   "fired_at_ms")} == trigger_record(fired[0], 4000)
    assert decode_trigger(value).trigger == fired[0]
    profile = Profile.from_wire(record["profile"])
    assert (profile.views, profile.searches, profile.last_query, profile.last_product,
            profile.tz, profile.last_ts) == (2, 1, "red shoes", "p", "Europe/Paris", 3000)
    assert profile.to_wire() == host.store.get("u1").profile.to_wire()  # type: ignore[union-attr]
    # the decision log's record of the fire rides with it, keyed by the user
    [(key, value)] = producer.sent[worker.settings.topics.decisions]
    decided = orjson.loads(value)
    assert key == b"u1" and decided["trigger_id"] == fired[0].trigger_id
    assert (decided["outcome"], decided["rule"]) == ("triggered", "repeat")


def test_dead_letter_record_keeps_reason_and_original() -> None:
    rec = orjson.loads(dead_letter_record("invalid_json", "bad", FakeMessage(b"{nope"), 5))
    assert rec["reason"] == "invalid_json"
    assert rec["detail"] == "bad"
    assert rec["where"] == "t.events:2:17"
    assert rec["raw"] == "{nope"
    assert "raw_b64" not in rec
    binary = b"\xff\xfe{"
    rec = orjson.loads(dead_letter_record("invalid_utf8", "x", FakeMessage(binary), 5))
    assert base64.b64decode(rec["raw_b64"]) == binary


# -- metrics, settings, factory -------------------------------------------------

def test_metrics_use_their_own_registry() -> None:
    a = WorkerMetrics.create()
    b = WorkerMetrics.create()
    a.events.labels("accepted", "").inc()
    a.triggers.labels("rv").inc(2)
    assert a.value("scenetrigger_events_total", {"result": "accepted", "reason": ""}) == 1
    assert a.value("scenetrigger_triggers_total", {"scene": "rv"}) == 2
    assert b.value("scenetrigger_triggers_total", {"scene": "rv"}) == 0


def settings(tmp_path: Path, **kw: Any) -> WorkerSettings:
    base: dict[str, Any] = {
        "config": config(), "app_id": "unit", "broker": "kafka://127.0.0.1:1",
        "topics": TopicNames.with_prefix("unit"), "state_dir": tmp_path}
    base.update(kw)
    return WorkerSettings(**base)


def test_settings_reject_bad_combinations(tmp_path: Path) -> None:
    with pytest.raises(WorkerSettingsError, match="partitions"):
        settings(tmp_path, partitions=0)
    with pytest.raises(WorkerSettingsError, match="session timeout"):
        settings(tmp_path, session_timeout_ms=1000)
    with pytest.raises(WorkerSettingsError, match="topic names"):
        settings(tmp_path, topics=TopicNames("a", "a", "b", "c"))
    with pytest.raises(WorkerSettingsError, match="reload"):
        settings(tmp_path, reload_interval_ms=1000)


def test_factory_builds_independent_apps(tmp_path: Path) -> None:
    s = settings(tmp_path, store="memory", partitions=3)
    worker = SceneWorker(s)
    app = worker.app
    assert app.conf.id == "unit"
    assert app.conf.processing_guarantee.value == "at_least_once"
    assert str(app.conf.store) == "memory:"
    assert worker.source.topics == ("unit.events", "unit.ticks")
    assert worker.table.partitions == 3
    assert [a.concurrency for a in app.agents.values()] == [1]
    other = create_app(settings(tmp_path, app_id="unit2"))
    assert other is not app
    assert str(other.conf.store) == "rocksdb:"


def test_broker_url_spellings() -> None:
    assert faust_broker_url("127.0.0.1:9") == "kafka://127.0.0.1:9"
    assert faust_broker_url("kafka://a:1,b:2") == "kafka://a:1;b:2"




class FakeFuture:
    def __init__(self, done: bool, exc: BaseException | None = None) -> None:
        self._done = done
        self._exc = exc

    def done(self) -> bool:
        return self._done

    def exception(self) -> BaseException | None:
        return self._exc


def test_pending_settles_only_when_every_send_is_acked() -> None:
    host = make_host({})
    pending = host.pending
    assert host.idle and pending.acked()
    pending.add("m1", 100)
    slow = FakeFuture(False)
    pending.futures.extend([FakeFuture(True), slow])
    assert not pending.acked()  # the first is dropped, the second holds the batch
    assert len(pending.futures) == 1
    slow._done = True
    assert pending.acked()
    assert pending.take() == (["m1"], [])
    assert pending.since_ms is None and not pending
    pending.futures.append(FakeFuture(True, RuntimeError("broker said no")))
    with pytest.raises(RuntimeError, match="broker said no"):
        pending.acked()
    assert not pending.futures
    with pytest.raises(RuntimeError, match="broker said no"):  # sticky: never settles
        pending.acked()


def test_a_refused_trigger_send_stops_the_worker_and_settles_nothing(tmp_path: Path) -> None:
    exits: list[int] = []
    worker = SceneWorker(settings(tmp_path, store="memory"), fatal=exits.append)
    host = worker.host(0)
    worker._stream = object()  # the sweep settles only once the agent runs
    host.pending.add("m1", 0)
    host.pending.futures.append(FakeFuture(True, KafkaTimeoutError()))
    worker._settle_quiet(10_000, 0)
    assert exits == [EXIT_TRIGGER_SEND_FAILED]
    worker._settle_quiet(20_000, 0)
    assert exits == [EXIT_TRIGGER_SEND_FAILED] * 2
    assert host.pending.messages == ["m1"]  # never acked: redone from the committed offset


async def test_the_agents_settle_marks_a_refused_send_failed(tmp_path: Path) -> None:
    worker = SceneWorker(settings(tmp_path, store="memory"), fatal=lambda code: None)
    host = worker.host(0)
    host.pending.add("m1", 0)
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    refused.set_exception(ProducerSendError("Error while sending"))
    host.pending.futures.append(refused)
    with pytest.raises(ProducerSendError):
        await worker._settle(host, None)
    assert host.pending.failed is not None and host.pending.messages == ["m1"]
    with pytest.raises(ProducerSendError):
        await worker._settle(host, None)


def test_worker_builds_engines_per_partition_and_reconfigures_them(tmp_path: Path) -> None:
    worker = SceneWorker(settings(tmp_path, store="memory"))
    host0, host1 = worker.host(0), worker.host(1)
    assert worker.host(0) is host0
    assert host0 is not host1 and host0.engine is not host1.engine
    assert host0.host.timer_scenes == {"abandon"}
    assert host0.event_clock is False
    worker.reconfigure(load_config_text(CONFIG.replace("abandon:", "gone_away:")))
    assert host0.host.timer_scenes == host1.host.timer_scenes == {"gone_away"}
    assert worker.host(2).host.timer_scenes == {"gone_away"}  # new engines use the new config


def test_topic_names_with_and_without_a_prefix() -> None:
    from agents.topics import topic_name

    assert [topic_name("shop", s) for s in ("events", "triggers", "journey-actions",
                                            "feedback")] == [
        "shop.events", "shop.triggers", "shop.journey-actions", "shop.feedback"]
    assert [topic_name(None, s) for s in ("events", "triggers", "journey-actions",
                                          "feedback")] == [
        "scenetrigger-events", "scenetrigger-triggers", "scenetrigger-journey-actions",
        "scenetrigger-feedback"]


def test_check_versions_names_what_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import faust_compat

    assert faust_compat.check_versions() == {}  # the versions it was checked against
    monkeypatch.setitem(faust_compat.CHECKED_AGAINST, "faust-streaming", "0.0.1")
    differ = faust_compat.check_versions()
    assert list(differ) == ["faust-streaming"] and differ["faust-streaming"] != "0.0.1"


def test_settle_bounds_are_checked() -> None:
    cfg = config()
    for bad in ({"settle_batch": 0}, {"settle_batch": 200_001, "max_pending": 200_000},
                {"max_pending": 0}, {"settle_ms": 0}):
        with pytest.raises(WorkerSettingsError):
            WorkerSettings(config=cfg, **bad)  # type: ignore[arg-type]
    assert WorkerSettings(config=cfg, settle_batch=50_000).settle_batch == 50_000
