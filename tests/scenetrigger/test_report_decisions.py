"""``report --decisions``: every kind of decision record, of any version,
read through the one model and counted per scene and outcome, the consent
changes by channel and source; a line that is no record is a clear error."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from scenetrigger.cli.main import main
from tests.channels.test_decision_versions import every_kind

V1 = b'{"ts":1780000000011,"user_id":"ann","outcome":"unsubscribed","channel":"email"}\n'


def test_report_counts_every_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    triggers, events, log = tmp_path / "t.jsonl", tmp_path / "e.jsonl", tmp_path / "d.jsonl"
    triggers.write_text("")
    events.write_text("")
    log.write_bytes(b"".join(r.encode() + b"\n" for r in every_kind()) + V1)
    assert main(["report", str(triggers), str(events), "--decisions", str(log),
                 "--json", "-"]) == 0
    counts = orjson.loads(capsys.readouterr().out)["decisions"]
    assert counts == {
        "records": 12, "versions": {"1": 1, "2": 11},
        "scenes": {"-": {"unsubscribed": 1},
                   "consent": {"erased": 1, "unsubscribed": 2},
                   "journey:winback": {"enrolled": 1, "step": 1},
                   "promo_arrival": {"clicked": 1, "delivered": 1, "opened": 1,
                                     "refused:user_filter": 1, "suppressed:cap_day": 1,
                                     "triggered:arrival": 1}},
        "consent": {"unsubscribed email via one_click": 1,
                    "unsubscribed sms via sms_reply": 1}}
    assert main(["report", str(triggers), str(events), "--decisions", str(log)]) == 0
    text = capsys.readouterr().out
    assert "decisions: 12 record(s)" in text and "  consent: erased 1, unsubscribed 2" in text


def test_a_line_that_is_no_record_names_file_and_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    empty, log = tmp_path / "t.jsonl", tmp_path / "d.jsonl"
    empty.write_text("")
    log.write_bytes(V1 + b'{"ts": "soon", "user_id": "a", "outcome": "x"}\n')
    assert main(["report", str(empty), str(empty), "--decisions", str(log)]) != 0
    assert f"{log}:2: not a decision record" in capsys.readouterr().err
