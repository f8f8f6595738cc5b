"""`scenetrigger users merge` without Kafka: the statement and the decision
records it sends, refused without a valid admin token."""

from __future__ import annotations

import pytest

from scenetrigger.cli.main import main
from scenetrigger.cli.ops.users_merge import merge_statement
from triggers.errors import SceneTriggerError
from triggers.merge import ADMIN_MERGE


def test_the_statement_and_its_decision_records() -> None:
    event, records = merge_statement("u-old", "u-new", "ops", 1234)
    assert event == {"user_id": "u-old", "ts": 1234, "type": ADMIN_MERGE, "known_id": "u-new",
                     "by": "ops"}
    assert [(r.user_id, r.outcome, r.rule, r.figures) for r in records] == [
        (u, "merged", "admin_merge", "u-old merged into u-new by ops") for u in ("u-old", "u-new")]
    for old, new in (("same", "same"), ("", "x"), ("x", "y" * 300)):
        with pytest.raises(SceneTriggerError):
            merge_statement(old, new, "ops", 1)


def test_refused_without_a_valid_admin_token(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SCENETRIGGER_ADMIN_TOKENS", "ops=op-secret")
    monkeypatch.setenv("SCENETRIGGER_TOKEN", "guess")
    # Port 9 on loopback: nothing is sent, the token check comes first.
    assert main(["users", "merge", "a", "b", "--broker", "127.0.0.1:9"]) != 0
    assert "admin token is not valid" in capsys.readouterr().err
