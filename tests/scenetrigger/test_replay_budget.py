"""The per-user trigger budget through the replay CLI (issue 19, point 7).

A bot's promo pages over the budget are refused: the summary counts them,
``--decisions`` holds a refusal record for each (rule ``trigger_budget``, as
the worker's decisions topic), and the triggers the budget let through are
the first ones of each window. The shipped config's budget leaves both
shared samples as they were (test_replay_samples checks those byte for byte).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from channels.feedback.decisions import DecisionRecord
from tests.scenetrigger.test_replay_samples import run_cli
from triggers.events import Trigger

T0 = 1_700_000_000_000
CONFIG = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page, cooldown: 1h}
engine:
  max_triggers_per_user: {count: 3, within: 10m}
"""


def test_replay_refuses_over_the_budget_and_records_each_refusal(tmp_path: Path) -> None:
    config = tmp_path / "budget.yaml"
    config.write_text(CONFIG)
    events = tmp_path / "bot.jsonl"
    # A bot: a new promo page every 10 s for 30 minutes; a person: 2 pages.
    lines = [{"user_id": "bot", "ts": T0 + i * 10_000, "type": "page", "page": f"/promo/{i}"}
             for i in range(180)]
    lines += [{"user_id": "ann", "ts": T0 + i, "type": "page", "page": f"/promo/{i}"}
              for i in range(2)]
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in lines))
    decisions = tmp_path / "decisions.jsonl"
    triggers, summary, done = run_cli(events, "--config", config, "--deliver", "dry-run",
                                      "--decisions", decisions, tmp=tmp_path)
    # the bot gets 3 per 10 minutes: at 0, 10 and 20 s, then at 10 min 0, 10, 20 s, ...
    expected_bot = [T0 + w * 600_000 + i * 10_000 for w in range(3) for i in range(3)]
    assert sorted(t[3] for t in triggers if t[1] == "bot") == expected_bot
    assert [t[1] for t in triggers].count("ann") == 2
    assert summary["refused_by_budget"] == {"promo_arrival": 180 - 9}
    assert "over the budget" in done.stderr.decode()
    records = [DecisionRecord.decode(line) for line in decisions.read_bytes().splitlines()]
    refused = [r for r in records if r.outcome == "refused"]
    assert len(refused) == 171 and {(r.rule, r.user_id) for r in refused} == {
        ("trigger_budget", "bot")}
    first = refused[0]
    assert first.trigger_id == Trigger("promo_arrival", "bot", "/promo/3", T0 + 30_000).trigger_id
    assert first.figures == "trigger budget spent: 3 within 10m per user"
    # every trigger the budget let through went on to delivery, none refused ones
    refused_ids = {r.trigger_id for r in refused}
    delivered = {r.trigger_id for r in records if r.outcome != "refused"}
    assert len(delivered) == len(triggers) and not delivered & refused_ids
