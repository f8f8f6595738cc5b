"""Event times beyond datetime's years 1-9999 (any 64-bit `ts` is valid input)
never stop a replay: the delivery ends suppressed with reason `bad_time`,
counted, and the trigger is still written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from channels.content.segments import habit_tags, utc_offset_hours
from channels.policy.decide import BAD_TIME, DeliveryPolicy, PolicyMetrics
from channels.policy.store import MemoryPolicyStore
from config.content_models import HabitRules
from config.delivery_models import DeliveryModel, QuietHoursModel
from scenetrigger.cli.main import main
from tests.channels.test_policy import request
from triggers.events import event_from_mapping
from triggers.profile import Profile

ROOT = Path(__file__).resolve().parents[2]
FAR = 1 << 62
# 9999-12-31 23:59:59 UTC: a date in UTC, past the last one in Asia/Shanghai.
LAST_UTC_SECOND = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)
# 9999-12-31 23:00 UTC is quiet (22-08): waking up needs 10000-01-01.
LAST_NIGHT = LAST_UTC_SECOND - 59 * 60_000 - 59_000
NOON = 1569931200000  # 2019-10-01 12:00 UTC


@pytest.mark.parametrize(("now", "tz"), [(FAR, None), (-FAR, None), ((1 << 63) - 1, None),
                                         (LAST_UTC_SECOND, "Asia/Shanghai"),
                                         (LAST_NIGHT, "UTC")])
async def test_policy_suppresses_a_time_without_a_date(now: int, tz: str | None) -> None:
    registry = CollectorRegistry()
    store = MemoryPolicyStore()
    model = DeliveryModel(default_timezone="UTC", quiet_hours=QuietHoursModel())
    policy = DeliveryPolicy(model, store, PolicyMetrics.on(registry))
    decision = await policy.decide(request("t1", now, tz=tz), now)
    assert (decision.action, decision.reason) == ("suppress", BAD_TIME)
    assert policy.suppressed == {BAD_TIME: 1}
    assert registry.get_sample_value("scenetrigger_suppressed_total",
                                     {"reason": BAD_TIME}) == 1
    # no dedupe claim was taken: the same trigger at a sane time still goes out
    assert (await policy.decide(request("t1", NOON), NOON)).action == "send"


def test_habit_tags_survive_a_time_without_a_date() -> None:
    profile = Profile()
    for i in range(6):
        profile.update(event_from_mapping({"user_id": "u", "ts": FAR + i, "type": "view",
                                           "tz": "Asia/Shanghai"}))
    assert utc_offset_hours("Asia/Shanghai", FAR) == 0
    assert utc_offset_hours("Asia/Shanghai", LAST_UTC_SECOND) == 0
    tags = habit_tags(profile, HabitRules(), FAR)
    # a day part, a weekday or weekend; and worktime when the day part is office hours
    assert tags[0].startswith("tod:") and tags[1] in ("weekday", "weekend")
    assert set(tags[2:]) <= {"worktime"}


def _events() -> list[dict[str, Any]]:
    far = [{"user_id": "far", "ts": FAR + i, "type": "page", "page": f"/promo/{i}",
            "tz": "Asia/Shanghai"} for i in range(6)]  # 5+ events: habit tags are computed
    return [
        {"user_id": "ok", "ts": NOON, "type": "page", "page": "/promo/a"},
        *far,
        {"user_id": "past", "ts": -FAR, "type": "page", "page": "/promo/a"},
        {"user_id": "edge", "ts": LAST_UTC_SECOND, "type": "page", "page": "/promo/a",
         "tz": "Asia/Shanghai"},
        {"user_id": "late", "ts": NOON + 1000, "type": "page", "page": "/promo/b"},
    ]


def _replay(tmp_path: Path, *extra: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _events()))
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    code = main(["replay", str(events), "--no-progress", "--out", str(out),
                 "--summary-json", str(summary), *extra])
    assert code == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return lines, orjson.loads(summary.read_bytes())


def _check(plain: list[dict[str, Any]], delivered: list[dict[str, Any]],
           summary: dict[str, Any]) -> None:
    contract = ("scene", "user_id", "key", "ts")
    assert [{k: d[k] for k in contract} for d in delivered] == plain
    outcome = {(d["user_id"], d["ts"]): (d["delivery"], d.get("reason")) for d in delivered}
    bad = {k: v for k, v in outcome.items() if k[0] in ("far", "past", "edge")}
    assert len(bad) == 8 and set(bad.values()) == {("suppressed", BAD_TIME)}
    assert outcome[("ok", NOON)] == outcome[("late", NOON + 1000)] == ("delivered", None)
    assert summary["delivery"]["suppressed"] == {BAD_TIME: 8}
    assert summary["delivery"]["delivered"] == 2


def test_replay_dry_run_goes_on_past_bad_times(tmp_path: Path) -> None:
    plain, summary = _replay(tmp_path)
    assert summary["events_taken"] == 10 and len(plain) == 10  # promo_arrival per page
    delivered, summary = _replay(tmp_path, "--deliver", "dry-run")
    _check(plain, delivered, summary)


@pytest.mark.integration
def test_replay_live_goes_on_past_bad_times(redis_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = tmp_path / "live.yaml"
    config.write_text((ROOT / "config" / "scenes.yaml").read_text(encoding="utf-8") + f"""
channels:
  inbox: {{type: inbox, key_prefix: "{prefix}:inbox"}}
delivery: {{default_timezone: UTC, redis_prefix: "{prefix}:"}}
""", encoding="utf-8")
    monkeypatch.setenv("SCENETRIGGER_REDIS_URL", redis_url)
    plain, _ = _replay(tmp_path, "--config", str(config))
    delivered, summary = _replay(tmp_path, "--config", str(config), "--deliver", "live")
    _check(plain, delivered, summary)
