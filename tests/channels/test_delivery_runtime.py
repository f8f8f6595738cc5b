"""Which Redis the live pipeline's inbox channels write to."""

from __future__ import annotations

import pytest

from channels.assembly import inbox_env
from config.channel_models import InboxModel, LogModel


def test_redis_url_flag_beats_the_default_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENETRIGGER_REDIS_URL", "redis://env:1/0")
    env = inbox_env({"inbox": InboxModel(type="inbox")}, "redis://flag:2/0")
    assert env["SCENETRIGGER_REDIS_URL"] == "redis://flag:2/0"


def test_a_channels_own_variable_wins_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOX_REDIS", "redis://inbox:3/0")
    monkeypatch.delenv("OTHER_REDIS", raising=False)
    models = {"a": InboxModel(type="inbox", redis_url_env="INBOX_REDIS"),
              "b": InboxModel(type="inbox", redis_url_env="OTHER_REDIS"),
              "log": LogModel(type="log")}
    env = inbox_env(models, "redis://flag:2/0")
    assert (env["INBOX_REDIS"], env["OTHER_REDIS"]) == ("redis://inbox:3/0", "redis://flag:2/0")


def test_no_flag_leaves_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENETRIGGER_REDIS_URL", raising=False)
    env = inbox_env({"inbox": InboxModel(type="inbox")}, None)
    assert "SCENETRIGGER_REDIS_URL" not in env
