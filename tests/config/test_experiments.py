"""Experiments in the versioned config (issue 24.6), directory store: a
candidate pushed with a share runs beside its base in the reloader, the draw
is the documented hash, one experiment at a time, and promote or rollback
end it."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from config.experiment import in_candidate, parse_share
from config.loader import DEFAULT_CONFIG_PATH, load_config
from config.reload import ConfigReloader
from config.versions import DirectoryStore, promote, push, push_experiment, rollback, running
from triggers.errors import SceneTriggerError

GOOD = DEFAULT_CONFIG_PATH.read_text()


def _cooldown(config: Any) -> int:
    cooldown: int = config.scenes["promo_arrival"].cooldown
    return cooldown

TUNED = GOOD.replace("cooldown: 1h", "cooldown: 10m")


def test_the_draw_is_the_documented_hash_and_shares_parse() -> None:
    for user in ("1", "u42", "丁"):
        digest = hashlib.blake2b(f"scenetrigger-config\x1fv7\x1f{user}".encode(),
                                 digest_size=8).digest()
        assert in_candidate(7, 0.3, user) is (int.from_bytes(digest, "big") / 2**64 < 0.3)
    share = sum(in_candidate(2, 0.1, str(u)) for u in range(10_000)) / 10_000
    assert 0.09 < share < 0.11
    assert parse_share("10%") == pytest.approx(0.1) and parse_share("0.25") == 0.25
    for bad in ("0", "60%", "x"):
        with pytest.raises(SceneTriggerError, match="--experiment"):
            parse_share(bad)


def test_experiment_runs_beside_its_base_and_promote_or_rollback_end_it(
        tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "versions")
    reloader = ConfigReloader(None, load_config(), store=store, digest="")

    async def scenario() -> None:
        with pytest.raises(SceneTriggerError, match="no config version yet"):
            await push_experiment(store, TUNED, "t", "alice", 0.1, 1000)
        await push(store, GOOD, "base", "alice")
        assert await reloader.follow()
        v2 = await push_experiment(store, TUNED, "trial", "alice", 0.1, 1000)
        with pytest.raises(SceneTriggerError, match="experiment already"):
            await push_experiment(store, TUNED, "again", "alice", 0.1, 1000)
        with pytest.raises(SceneTriggerError, match="end it first"):
            await push(store, GOOD, "plain", "bob")  # the console's push too
        assert await reloader.follow()
        running_now = reloader.experiment
        assert running_now is not None and running_now.version == v2.version == 2
        assert _cooldown(reloader.config) == 3_600_000  # the base
        assert _cooldown(running_now.candidate) == 600_000
        assert not await reloader.follow()  # nothing new
        # rollback without a number: to the base, ending the experiment
        back = await rollback(store, None, "", "bob")
        assert back.rollback_of == 1 and back.experiment is None
        assert await reloader.follow()
        assert reloader.experiment is None, "the rollback ends it"
        assert running(await store.versions()) is None
        with pytest.raises(SceneTriggerError, match="nothing to promote"):
            await promote(store, "", "bob")
        await push_experiment(store, TUNED, "again", "alice", 0.2, 1000)
        assert await reloader.follow()
        assert _running(reloader)
        shipped = await promote(store, "", "bob")
        assert shipped.text == TUNED and shipped.message == "promote v4"
        assert await reloader.follow()
        assert reloader.experiment is None, "promote ends it"
        assert _cooldown(reloader.config) == 600_000

    asyncio.run(scenario())


def _running(reloader: ConfigReloader) -> bool:
    return reloader.experiment is not None


def test_the_cli_pushes_an_experiment_and_refuses_a_plain_push_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from scenetrigger.cli.main import main

    monkeypatch.setenv("SCENETRIGGER_ADMIN_TOKENS", "ops=tok")
    monkeypatch.setenv("SCENETRIGGER_TOKEN", "tok")
    good, tuned = tmp_path / "good.yaml", tmp_path / "tuned.yaml"
    good.write_text(GOOD)
    tuned.write_text(TUNED)
    store = ["--store", str(tmp_path / "v")]
    assert main(["config", "push", str(good), "-m", "base", *store]) == 0
    assert main(["config", "push", str(tuned), "-m", "try", "--experiment", "10%", *store]) == 0
    assert "experiment: v2 runs for 10% of users (by hash), v1 for the others" in \
        capsys.readouterr().out
    assert main(["config", "push", str(good), "-m", "plain", *store]) != 0
    assert "end it first" in capsys.readouterr().err
    assert main(["config", "log", *store]) == 0
    assert "[experiment: 10% of users against v1]" in capsys.readouterr().out
    assert main(["config", "rollback", "-m", "no", *store]) == 0
    versions = asyncio.run(DirectoryStore(tmp_path / "v").versions())
    assert [(v.version, v.rollback_of, v.experiment is None) for v in versions] == [
        (1, None, True), (2, None, False), (3, 1, True)]
