"""Return per ad channel and audience (``report --by channel``): reach,
conversions against the never-synced holdout, incremental conversions and
cost per incremental conversion with 95 % intervals; the spend import."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import orjson
import pytest

from scenetrigger.cli.main import main
from strategies.ads_roi import channel_report, read_spend
from triggers.audiences.record import AudienceChange
from triggers.errors import SceneTriggerError
from triggers.events import Event

SALT, SHARE, AUDIENCE = "scenetrigger", 0.25, "viewed_no_buy"
T0 = 1_780_000_000  # seconds
DAY_MS = 86_400_000


def in_holdout(user: str) -> bool:
    """The documented rule: blake2b-64 of "salt\\x1fads:AUDIENCE\\x1fuser" / 2**64 < share."""
    digest = hashlib.blake2b(f"{SALT}\x1fads:{AUDIENCE}\x1f{user}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < SHARE


def _data() -> tuple[list[AudienceChange], list[Event], dict[str, bool]]:
    rng = random.Random(11)
    records, events, converted = [], [], {}
    for n in range(600):
        user = f"u{n}"
        records.append(AudienceChange(AUDIENCE, user, "enter", float(T0 + n), "viewed"))
        chance = 0.10 if in_holdout(user) else 0.30
        buys = rng.random() < chance
        converted[user] = buys
        at = (T0 + n) * 1000 + (DAY_MS // 2 if buys else -1_000)  # a purchase before: not one
        events.append(Event(user, at, "purchase", {"type": "purchase"}))
        events.append(Event(user, (T0 + n) * 1000 + 3 * DAY_MS, "purchase", {}))  # too late
    records.append(AudienceChange(AUDIENCE, "u1", "exit", float(T0 + 9_000), "bought"))
    return records, events, converted


def test_the_channel_rows_count_against_the_holdout() -> None:
    records, events, converted = _data()
    spend = read_spend("s.csv", b"channel,day,audience,spend\nmeta,2026-12-01,viewed_no_buy,"
                                b"300\nmeta,2026-12-02,viewed_no_buy,200.5\n"
                                b"tiktok,2026-12-01,viewed_no_buy,50\n")
    rows = channel_report({"meta": {AUDIENCE: "1"}, "tiktok": {AUDIENCE: "2"}}, records,
                          events, spend, holdout=SHARE, salt=SALT, window_ms=DAY_MS)
    held = [u for u in converted if in_holdout(u)]
    synced = [u for u in converted if not in_holdout(u)]
    x_t, x_c = sum(converted[u] for u in synced), sum(converted[u] for u in held)
    meta = rows[0]
    assert (meta.channel, meta.members, meta.reach, meta.holdout) == (
        "meta", 600, len(synced), len(held))
    assert (meta.conversions, meta.holdout_conversions) == (x_t, x_c)
    uplift = x_t / len(synced) - x_c / len(held)
    assert meta.uplift == pytest.approx(uplift)
    assert meta.incremental == pytest.approx(uplift * len(synced))
    assert meta.spend == pytest.approx(500.5)
    assert meta.cost_per_incremental == pytest.approx(500.5 / (uplift * len(synced)))
    assert meta.uplift_low is not None and meta.uplift_high is not None
    assert 0 < meta.uplift_low < uplift < meta.uplift_high  # a real effect: 0.30 vs 0.10
    assert None not in (meta.cost_low, meta.cost_high, meta.cost_per_incremental)
    assert meta.cost_low is not None and meta.cost_high is not None
    assert meta.cost_per_incremental is not None
    assert meta.cost_low < meta.cost_per_incremental < meta.cost_high
    assert rows[1].spend == 50 and rows[1].reach == meta.reach  # one holdout per audience


def test_spend_comes_as_csv_json_or_json_lines_and_bad_rows_say_where() -> None:
    row = {"channel": "meta", "day": "2026-12-01", "audience": "a", "spend": 1.5}
    assert read_spend("s.json", orjson.dumps([row]))[0].spend == 1.5
    assert read_spend("s.jsonl", orjson.dumps(row) + b"\n" + orjson.dumps(row))[1].day == \
        "2026-12-01"
    with pytest.raises(SceneTriggerError, match=r"s\.csv:3"):
        read_spend("s.csv", b"channel,day,audience,spend\nmeta,2026-12-01,a,1\nmeta,12/01,a,1\n")
    with pytest.raises(SceneTriggerError, match="spend: not a number"):
        read_spend("s.json", orjson.dumps([{**row, "spend": "lots"}]))


def test_report_by_channel_on_the_command_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    records, events, _ = _data()
    out = tmp_path / "replay.jsonl"
    out.write_bytes(b"".join(orjson.dumps({"kind": "audience", "audience": r.audience,
                                           "user_id": r.user_id, "op": r.op, "ts": r.ts,
                                           "reason": r.reason}) + b"\n" for r in records))
    (tmp_path / "events.jsonl").write_bytes(b"".join(
        orjson.dumps({"user_id": e.user_id, "ts": e.ts, "type": e.type}) + b"\n"
        for e in events))
    (tmp_path / "spend.csv").write_text("channel,day,audience,spend\n"
                                        "meta,2026-12-01,viewed_no_buy,100\n")
    (tmp_path / "ads.yaml").write_text(orjson.dumps({
        "scenes": {"promo_arrival": {"kind": "arrival", "per": "page",
                                     "when": {"page": {"prefix": "/promo"}}}},
        "strategies": {"attribution": {"window": "1d"}},
        "ads": {"holdout": SHARE, "sinks": {"meta": {
            "type": "meta", "token_env": "T", "audiences": {AUDIENCE: "1"}}}}}).decode())
    code = main(["report", str(out), str(tmp_path / "events.jsonl"), "--by", "channel",
                 "--spend", str(tmp_path / "spend.csv"), "--config", str(tmp_path / "ads.yaml"),
                 "--json", "-"])
    assert code == 0
    report = orjson.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    assert (row["channel"], row["members"], row["spend"]) == ("meta", 600, 100.0)
    assert row["cost_per_incremental"] == pytest.approx(100 / row["incremental"])
    assert main(["report", str(out), str(tmp_path / "events.jsonl"), "--by", "channel",
                 "--config", str(tmp_path / "ads.yaml")]) == 0
    assert "incremental" in capsys.readouterr().out
