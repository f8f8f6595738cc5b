"""Versioned config in the embedded mode (a directory store): push validates
first, versions carry digest, author, message and diff, rollback is a new
version, and the one reloader follows the store keeping the running config
when a version does not validate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from config.loader import DEFAULT_CONFIG_PATH, load_config
from config.reload import ConfigReloader, ReloadMetrics
from config.versions import ConfigVersion, DirectoryStore, author_of, digest_of, push, rollback
from triggers.errors import ConfigError, SceneTriggerError

GOOD = DEFAULT_CONFIG_PATH.read_text()
TUNED = GOOD.replace("cooldown: 1h", "cooldown: 10m")
BAD = GOOD.replace("cooldown: 1h", "cooldwn: 1h")
ENV = {"SCENETRIGGER_ADMIN_TOKENS": "alice=tok-a, bob=tok-b"}


def test_author_is_the_token_name_and_no_token_refuses() -> None:
    assert author_of("tok-b", ENV) == "bob"
    assert author_of("single", {"SCENETRIGGER_ADMIN_TOKEN": "single"}) == "admin"
    for token, env in (("tok-x", ENV), (None, ENV), ("tok-a", {})):
        with pytest.raises(SceneTriggerError):
            author_of(token, env)


def test_push_log_rollback_in_a_directory(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "versions")

    async def scenario() -> list[ConfigVersion]:
        await push(store, GOOD, "first", "alice", now_ms=1)
        await push(store, TUNED, "shorter promo cooldown", "bob", now_ms=2)
        with pytest.raises(ConfigError) as info:
            await push(store, BAD, "typo", "bob", source="bad.yaml")
        assert any(p.startswith("bad.yaml:") and "scene 'promo_arrival', field 'cooldwn'" in p
                   and "did you mean 'cooldown'" in p for p in info.value.problems)
        await rollback(store, 1, "", "alice")
        return await store.versions()

    versions = asyncio.run(scenario())
    assert [(v.version, v.author, v.message, v.rollback_of) for v in versions] == [
        (1, "alice", "first", None), (2, "bob", "shorter promo cooldown", None),
        (3, "alice", "rollback to v1", 1)]  # the refused push stored nothing
    assert versions[2].digest == versions[0].digest == digest_of(GOOD)
    assert "-    cooldown: 1h\n+    cooldown: 10m\n" in versions[1].diff


def test_the_reloader_follows_the_store_and_refuses_a_bad_version(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "versions")
    registry = CollectorRegistry()
    metrics = ReloadMetrics.on(registry)
    assert ReloadMetrics.on(registry) is metrics
    seen: list[object] = []

    def digest_metric(digest: str) -> float | None:
        return registry.get_sample_value("scenetrigger_config_version_info", {"digest": digest})

    async def scenario() -> None:
        await push(store, GOOD, "first", "alice")
        reloader = ConfigReloader(None, load_config(), store=store, metrics=metrics,
                                  digest=digest_of(GOOD))
        reloader.subscribe(seen.append)
        assert await reloader.follow() is False  # v1 is what runs
        await push(store, TUNED, "tuned", "bob")
        assert await reloader.follow() is True
        assert reloader.status.stored_version == 2
        assert digest_metric(digest_of(TUNED)) == 1 and digest_metric(digest_of(GOOD)) is None
        # a version this process cannot validate (written past push's check)
        await store.append(ConfigVersion(3, digest_of(BAD), "mallory", 0, "raw", BAD, ""))
        running = reloader.config
        assert await reloader.follow() is False
        assert reloader.config is running
        assert "scene 'promo_arrival', field 'cooldwn'" in reloader.status.last_error[0]
        assert registry.get_sample_value("scenetrigger_config_reload_failures_total") == 1
        assert digest_metric(digest_of(TUNED)) == 1
        await rollback(store, 1, "back", "alice")
        assert await reloader.follow() is True
        assert digest_metric(digest_of(GOOD)) == 1 and digest_metric(digest_of(TUNED)) is None

    asyncio.run(scenario())
    assert len(seen) == 2


def test_a_listener_that_cannot_apply_refuses_the_version(tmp_path: Path) -> None:
    reloader = ConfigReloader(None, load_config(), digest="start")

    def cannot(_config: object) -> None:
        raise ConfigError(["channel 'crm', field 'secret_env': environment variable unset"])

    before = reloader.config
    reloader.subscribe(cannot)
    assert reloader.offer(TUNED, "config v2") is False
    assert reloader.config is before and reloader.status.rejected == 1


def test_config_cli_push_log_show_rollback(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(BAD)
    store = str(tmp_path / "store")
    env = {"PATH": "/usr/bin:/bin", **ENV, "SCENETRIGGER_TOKEN": "tok-a"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "config", "--store",
                               store, *args], capture_output=True, text=True, timeout=60,
                              check=False, env=env)

    assert cli("push", str(good), "-m", "first").returncode == 0
    refused = cli("push", str(bad), "-m", "typo")
    assert refused.returncode == 1
    assert f"{bad}:" in refused.stderr and "field 'cooldwn'" in refused.stderr
    assert cli("rollback", "1").returncode == 0
    log = cli("log").stdout.splitlines()
    listed = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "config", "log",
                             "--store", store, "--json"], capture_output=True, text=True,
                            timeout=60, check=True, env=env)  # options after the verb too
    assert [v["version"] for v in json.loads(listed.stdout)] == [2, 1]
    assert [line.split()[0] for line in log] == ["v2", "v1"]
    assert "alice" in log[0] and "rollback to v1" in log[0]
    shown = cli("show", "current").stdout
    assert shown.startswith("# v2 ") and "promo_arrival" in shown
    assert cli("show", "1", "--text").stdout == GOOD
    env["SCENETRIGGER_TOKEN"] = "wrong"
    assert "not valid" in cli("push", str(good), "-m", "x").stderr
