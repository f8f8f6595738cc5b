"""One poison record never stops delivery (issue 11): an event's time zone
"America" (a tzdata directory: ZoneInfo raised IsADirectoryError, an OSError
that delivery took for a network fault and retried forever, so no partition
moved again), and any other exception on one record, dead-letter that record
with its reason while the rest of the batch and the other partitions flow."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from channels.base import DeliveryResult, Message
from channels.policy.decide import DeliveryRequest
from channels.policy.store import MemoryPolicyStore
from scenetrigger.cli.main import main
from tests.channels.content_factories import T0, user_state
from tests.channels.test_kafka_delivery_unit import NOW, Harness, config, trigger_value
from triggers.classify import utc_offset_hours
from triggers.events import Event
from triggers.profile import Profile
from triggers.zones import is_zone_name, zone_or_none

NOT_ZONES = ["America", "US", "Etc", "zone.tab", "tzdata.zi", "__init__.py", "", "/etc/passwd",
             "../../etc/localtime", "America/", "x" * 100, "Europe/Nowhere"]


class Buried:
    """The record dead-letter's interface, in memory."""

    def __init__(self, failures: int = 0) -> None:
        self.records: list[tuple[str, bytes | None, str, str]] = []
        self.failures = failures

    async def add_record(self, source: str, raw: bytes | None, reason: str,
                         detail: str) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise RedisConnectionError("dead-letter Redis is gone")
        self.records.append((source, raw, reason, detail))
        return f"{len(self.records)}-0"


class PoisonSender:
    """Raises ``exc`` for user ``bad``; records everyone else's message."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc
        self.messages: list[Message] = []
        self.dead_letter: Buried | None = None

    async def send(self, message: Message, channel: str | None = None, *,
                   dead_letter: bool = True) -> DeliveryResult:
        if message.user_id == "bad":
            raise self.exc
        self.messages.append(message)
        return DeliveryResult(True, channel or message.channel, message.message_id)


@pytest.mark.parametrize("name", NOT_ZONES)
def test_only_a_known_zone_is_a_zone(name: str) -> None:
    assert not is_zone_name(name)
    assert zone_or_none(name) is None
    assert utc_offset_hours(name, T0) == 0  # raised IsADirectoryError for "America"


def test_known_zones_are_zones() -> None:
    for name in ("UTC", "Asia/Shanghai", "America/New_York", "Europe/Paris"):
        assert is_zone_name(name) and zone_or_none(name) is not None


@pytest.mark.parametrize("name", NOT_ZONES[:4])
def test_a_profile_keeps_only_a_known_zone(name: str) -> None:
    profile = Profile()
    profile.update(Event("u", T0, "view", {"user_id": "u", "ts": T0, "type": "view",
                                           "tz": "Asia/Shanghai"}))
    profile.update(Event("u", T0 + 1, "view", {"user_id": "u", "ts": T0 + 1, "type": "view",
                                               "tz": name}))
    assert profile.tz == "Asia/Shanghai"
    wire = profile.to_wire()
    wire[15] = name  # a record from a worker before this check, or a forged one
    assert Profile.from_wire(wire).tz is None


async def test_a_policy_given_a_directory_zone_uses_the_default() -> None:
    h = Harness(cfg=config("{start: '22:00', end: '08:00'}"))
    policy = h.pipeline.policy
    assert str(policy.zone("America")) == "UTC"
    req = DeliveryRequest("t1", "u", "s", None, NOW, ("inbox",), "America")
    decision = await policy.decide(req, NOW)
    assert decision.action in ("send", "defer")


async def test_a_trigger_whose_profile_names_a_directory_zone_is_delivered() -> None:
    h = Harness()  # caps count days in the user's zone
    state = user_state("s1", "search_driven")
    state.profile.tz = "America"  # forged past the profile's own check
    values = [trigger_value("s1", state), trigger_value("s2", user_state("s2", "search_driven"))]
    batch = {("p.triggers", 0): [h.record("p.triggers", values[0])],
             ("p.triggers", 1): [h.record("p.triggers", values[1], partition=1)]}
    await h.delivery.handle_batch(batch)
    assert sorted(m.user_id for m in h.sender.messages) == ["s1", "s2"]
    assert h.consumer.commits == [{("p.triggers", 0): 1, ("p.triggers", 1): 1}]


@pytest.mark.parametrize("exc", [IsADirectoryError(21, "Is a directory"), KeyError("x"),
                                 RecursionError("deep"), ValueError("bad")])
async def test_an_exception_on_one_record_dead_letters_it_and_the_rest_flow(
        exc: Exception) -> None:
    h = Harness()
    sender = PoisonSender(exc)
    buried = sender.dead_letter = Buried()  # as ChannelSender's dead-letter store
    h.pipeline.sender = sender
    h.delivery.dead_letter = Buried()
    users = ["a1", "bad", "a2"]
    records = [h.record("p.triggers", trigger_value(u, user_state(u, "search_driven")))
               for u in users]
    other = h.record("p.triggers", trigger_value("b1", user_state("b1", "search_driven")), 1)
    await h.delivery.handle_batch({("p.triggers", 0): records, ("p.triggers", 1): [other]})
    assert sorted(m.user_id for m in sender.messages) == ["a1", "a2", "b1"]
    # the request is dead-lettered by the pipeline (once: not again as a record)
    assert [(r[0].split("|")[1], r[2]) for r in buried.records] == [("bad", "error")]
    assert buried.records[0][0].startswith("request/")
    assert type(exc).__name__ in buried.records[0][3]
    assert DeliveryRequest.decode(buried.records[0][1] or b"").user_id == "bad"
    assert h.delivery.dead_letter.records == []
    assert h.consumer.commits == [{("p.triggers", 0): 3, ("p.triggers", 1): 1}]
    assert h.metric("scenetrigger_deliver_records_total", kind="trigger",
                    result="failed") == 1
    assert await h.pipeline.policy.deferred_count() == 0  # no lease left pending


async def test_a_malformed_record_is_dead_lettered_with_its_reason() -> None:
    h = Harness()
    buried = Buried()
    h.delivery.dead_letter = buried
    records = [h.record("p.triggers", b"\xff not json"),
               h.record("p.triggers", trigger_value("a1", user_state("a1", "search_driven")))]
    await h.delivery.handle_batch({("p.triggers", 0): records})
    assert [(r[0], r[1], r[2]) for r in buried.records] == [
        ("p.triggers/0/0", b"\xff not json", "invalid_json")]
    assert [m.user_id for m in h.sender.messages] == ["a1"]
    assert h.consumer.commits == [{("p.triggers", 0): 2}]


class AlwaysDown(MemoryPolicyStore):
    """Redis refusing every dedupe claim of user ``bad``'s trigger."""

    async def claim(self, key: str, ttl_ms: int, now_ms: int) -> bool:
        if "|bad|" in key:
            raise RedisConnectionError("connection refused")
        return await super().claim(key, ttl_ms, now_ms)


async def test_transient_retries_are_bounded_then_the_record_is_dead_lettered() -> None:
    h = Harness(store=AlwaysDown())
    buried = Buried()
    h.delivery.dead_letter = buried
    h.delivery.max_attempts = 3
    records = [h.record("p.triggers", trigger_value(u, user_state(u, "search_driven")))
               for u in ("bad", "a1")]
    await h.delivery.handle_batch({("p.triggers", 0): records})
    assert [(r[0], r[2]) for r in buried.records] == [("p.triggers/0/0", "retries_exhausted")]
    assert "3 attempts" in buried.records[0][3]
    assert [m.user_id for m in h.sender.messages] == ["a1"]
    assert h.consumer.commits == [{("p.triggers", 0): 2}]


async def test_a_dead_letter_that_cannot_be_written_is_retried_not_skipped() -> None:
    h = Harness()
    buried = Buried(failures=2)  # the dead-letter Redis is down for two tries
    h.delivery.dead_letter = buried
    records = [h.record("p.triggers", b"[1, 2]"),
               h.record("p.triggers", trigger_value("a1", user_state("a1", "search_driven")))]
    await h.delivery.handle_batch({("p.triggers", 0): records})
    assert [r[2] for r in buried.records] == ["invalid_json"]
    assert h.consumer.commits == [{("p.triggers", 0): 2}]




def test_replay_dry_run_delivers_past_every_poison_zone(tmp_path: Path) -> None:
    """``replay --deliver dry-run`` crashed (IsADirectoryError) on ``tz: "America"``."""
    noon = 1569931200000
    events = [{"user_id": f"u{i}", "ts": noon + i, "type": "page", "page": "/promo/a",
               "tz": name} for i, name in enumerate(NOT_ZONES)]
    events.append({"user_id": "ok", "ts": noon + 99, "type": "page", "page": "/promo/a",
                   "tz": "Asia/Shanghai"})
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    assert main(["replay", str(path), "--no-progress", "--out", str(out), "--summary-json",
                 str(summary), "--deliver", "dry-run"]) == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [d["user_id"] for d in lines] == [e["user_id"] for e in events]
    assert {d["delivery"] for d in lines} == {"delivered"}
    assert orjson.loads(summary.read_bytes())["delivery"]["delivered"] == len(events)
