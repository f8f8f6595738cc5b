"""``scenetrigger inbox-token``: the expiring bearer token a shop backend
mints for its logged-in user, by the formula of docs/security.md, computed
here with hmac/hashlib."""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson
import pytest

from scenetrigger.cli.main import main

ENV = "SCENETRIGGER_INBOX_SECRET"


def expected(user: str, exp: int) -> str:
    return hmac.new(b"cli-secret", f"inbox\n{user}\n{exp}".encode(), hashlib.sha256).hexdigest()


def test_it_signs_user_and_exp_and_refuses_what_serve_would(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(ENV, "cli-secret")
    before = int(time.time())
    assert main(["inbox-token", "ann b&c", "--ttl", "30m"]) == 0
    exp_text, dot, sig = capsys.readouterr().out.strip().partition(".")
    exp = int(exp_text)
    assert dot and before + 1800 <= exp <= int(time.time()) + 1800
    assert sig == expected("ann b&c", exp)
    assert main(["inbox-token", "ann"]) == 0  # 1 h unless told
    exp = int(capsys.readouterr().out.partition(".")[0])
    assert before + 3600 <= exp <= int(time.time()) + 3600
    assert main(["inbox-token", "ann", "--exp", "7", "--json"]) == 0
    out = capsys.readouterr()
    assert orjson.loads(out.out) == {"user": "ann", "exp": "7",
                                     "token": f"7.{expected('ann', 7)}"}
    assert "past" in out.err
    assert main(["inbox-token", "ann", "--ttl", "25h"]) == 1  # serve would refuse it
    assert "at most 86400 s" in capsys.readouterr().err
    monkeypatch.delenv(ENV)
    assert main(["inbox-token", "ann"]) == 1
    assert ENV in capsys.readouterr().err
