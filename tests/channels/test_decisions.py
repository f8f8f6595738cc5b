"""The decision log: every outcome the pipeline returns is one record with the
deciding rule and its figures (cap, quiet hours, control, dedupe, sent), and
the file and memory logs stay bounded and erase a user."""

from __future__ import annotations

from pathlib import Path

from channels.assembly import DryRunSender, build_pipeline
from channels.feedback.decisions import (
    DecisionRecord,
    FileDecisionLog,
    MemoryDecisionLog,
    read_decision_file,
)
from channels.policy.control import in_control
from config.loader import load_config_text
from triggers.events import Trigger

NOON_SHANGHAI = 1_569_902_400_000  # 2019-10-01 12:00 Asia/Shanghai (04:00 UTC)
HOUR = 3_600_000
CONFIG = """
scenes:
  arrive: {kind: arrival, when: {type: cart}}
content:
  scenes:
    arrive: {fallback: {channels: [inbox], subject: "Hi", text: "Still there."}}
delivery:
  default_timezone: Asia/Shanghai
  caps: {per_day: 3, per_week: 10}
  quiet_hours: {start: "22:00", end: "08:00"}
strategies: {control: {share: 0.3, salt: decisions-test}}
"""


def _treated(prefix: str) -> str:
    config = load_config_text(CONFIG)
    return next(u for u in (f"{prefix}{i}" for i in range(100))
                if not in_control(config.strategies.control, "arrive", u))


async def test_cap_quiet_hours_control_and_dedupe_each_name_rule_and_figures() -> None:
    config = load_config_text(CONFIG)
    pipeline = build_pipeline(config, "dry-run", DryRunSender(), env={})
    log = pipeline.decisions = MemoryDecisionLog()
    capped = _treated("cap")
    for i in range(4):
        ts = NOON_SHANGHAI + i * 60_000
        await pipeline.deliver(Trigger("arrive", capped, None, ts), None, ts)
    night = _treated("night")
    late = NOON_SHANGHAI + 11 * HOUR  # 23:00 in Shanghai
    await pipeline.deliver(Trigger("arrive", night, None, late), None, late)
    held = next(u for u in (f"c{i}" for i in range(100))
                if in_control(config.strategies.control, "arrive", u))
    await pipeline.deliver(Trigger("arrive", held, None, NOON_SHANGHAI), None, NOON_SHANGHAI)
    first = Trigger("arrive", capped, None, NOON_SHANGHAI)
    await pipeline.deliver(first, None, NOON_SHANGHAI + 5 * 60_000)  # the same trigger again

    texts = [(r.user_id, r.outcome, r.text()) for r in log.records]
    assert texts[:4] == [
        (capped, "delivered", f"delivered: local 12:0{i} Asia/Shanghai, under cap_day 3 and "
                              "cap_week 10") for i in range(3)] + [
        (capped, "suppressed", "cap_day: 3 of 3 sent today (Asia/Shanghai)")]
    assert texts[4] == (night, "deferred", "quiet_hours: until 08:00 Asia/Shanghai")
    assert texts[5][:2] == (held, "suppressed")
    assert texts[5][2].startswith("control: user's bucket 0.")
    assert texts[5][2].endswith("< share 0.3 held out of arrive")
    assert texts[6] == (capped, "suppressed",
                        f"duplicate: id {first.trigger_id} already decided within 7d")
    assert len(log.records) == 7  # one per outcome, nothing else
    assert {r.trigger_id for r in log.for_user(capped)} >= {first.trigger_id}
    assert log.records[0].message_id and log.records[0].channel == "inbox"
    assert log.records[4].due_ms == NOON_SHANGHAI + 20 * HOUR  # 08:00 the next day


def test_records_round_trip_compactly() -> None:
    record = DecisionRecord(5, "u", "t1", "arrive", "suppressed", "cap_day", "3 of 3 sent today")
    assert DecisionRecord.decode(record.encode()) == record
    assert b"channel" not in record.encode()  # absent fields are not written


def test_memory_log_is_bounded_and_erases_a_user() -> None:
    log = MemoryDecisionLog(max_records=3)
    for i in range(5):
        log.write(DecisionRecord(i, "a" if i % 2 else "b", f"t{i}", "s", "delivered"))
    assert [r.ts for r in log.records] == [2, 3, 4]
    assert log.erase("b") == 2
    assert [r.ts for r in log.records] == [3]


def test_file_log_rotates_at_its_bound_and_erases_a_user(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    log = FileDecisionLog(path, max_bytes=400)
    for i in range(30):
        log.write(DecisionRecord(i, f"u{i % 3}", f"t{i}", "arrive", "delivered"))
    log.flush()
    assert path.with_name("decisions.jsonl.1").exists()
    kept = read_decision_file(path)
    assert 0 < len(kept) < 30 and kept[-1].ts == 29  # the oldest ones were dropped
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total <= 2 * 400 + 100
    erased = log.erase("u1")
    log.flush()
    assert erased == sum(1 for r in kept if r.user_id == "u1") > 0
    assert all(r.user_id != "u1" for r in read_decision_file(path))
    log.close()
