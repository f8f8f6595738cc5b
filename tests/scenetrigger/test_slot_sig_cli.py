"""``scenetrigger slot-sig``: the signed slot query a shop page carries, by
the formula of docs/security.md, computed here with hmac/hashlib."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs

import orjson
import pytest

from config.tokens import SLOT_SECRET_ENV
from scenetrigger.cli.main import main


def test_it_signs_user_and_exp_and_refuses_what_serve_would(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SLOT_SECRET_ENV, "cli-secret")
    before = int(time.time())
    assert main(["slot-sig", "ann b&c", "--ttl", "30m"]) == 0
    query = {k: v[0] for k, v in parse_qs(capsys.readouterr().out.strip()).items()}
    exp = int(query["exp"])
    assert query["user"] == "ann b&c" and before + 1800 <= exp <= int(time.time()) + 1800
    assert query["sig"] == hmac.new(b"cli-secret", f"slot\nann b&c\n{exp}".encode(),
                                    hashlib.sha256).hexdigest()
    assert main(["slot-sig", "ann", "--exp", "7", "--json"]) == 0
    out = capsys.readouterr()
    assert orjson.loads(out.out) == {"user": "ann", "exp": "7", "sig": hmac.new(
        b"cli-secret", b"slot\nann\n7", hashlib.sha256).hexdigest()}
    assert "past" in out.err
    assert main(["slot-sig", "ann", "--ttl", "25h"]) == 1  # serve would refuse it
    assert "at most 86400 s" in capsys.readouterr().err
    monkeypatch.delenv(SLOT_SECRET_ENV)
    assert main(["slot-sig", "ann"]) == 1
    assert SLOT_SECRET_ENV in capsys.readouterr().err


@pytest.mark.parametrize("command", ["slot-sig", "inbox-token"])
def test_a_ttl_without_a_unit_is_refused(command: str, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Elsewhere a bare number is milliseconds: ``--ttl 3600`` meant as an
    hour would mint a credential that dies in 3.6 s."""
    monkeypatch.setenv(SLOT_SECRET_ENV, "cli-secret")
    monkeypatch.setenv("SCENETRIGGER_INBOX_SECRET", "cli-secret")
    with pytest.raises(SystemExit) as refused:
        main([command, "ann", "--ttl", "3600"])
    assert refused.value.code == 2
    assert "give --ttl a unit (3600s, 3600m or 3600h)" in capsys.readouterr().err
    assert main([command, "ann", "--ttl", "3600s"]) == 0
