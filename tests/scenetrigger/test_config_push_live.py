"""One config for every process: a push reaches a running worker, journeys,
deliver, serve and collector (real Kafka and Redis) without a restart; a bad push is
refused naming scene and field, a version they cannot validate is refused by
each and the old one kept; a rollback brings the old digest back everywhere."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.config_store import KafkaVersionStore
from config.versions import ConfigVersion, digest_of
from tests.agents.worker_support import WorkerProcess, start_cli, start_worker, unique, wait_for
from tests.services import REPO, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKENS = {"SCENETRIGGER_ADMIN_TOKENS": "ops=tok-ops", "SCENETRIGGER_TOKEN": "tok-ops"}


def config_text(run: str, cooldown: str) -> str:
    return f"""\
scenes:
  arrive:
    kind: arrival
    when: {{type: cart}}
    cooldown: {cooldown}
channels:
  log: {{type: log}}
content:
  scenes:
    arrive:
      fallback: {{channels: [log], subject: "Your cart", text: "Still there."}}
delivery:
  default_timezone: UTC
  quiet_hours: {{enabled: false}}
  redis_prefix: "{run}:"
strategies:
  journeys:
    follow_up:
      entry: {{scene: arrive}}
      steps: [{{wait: 1h}}]
"""


def _popen(tmp: Path, name: str, args: list[str], port: int) -> WorkerProcess:
    return start_cli(tmp / f"{name}.log", name, args, port)


def test_push_reaches_every_process_and_rollback_restores(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    prefix = unique("t-cfgpush")
    v1_text, v2_text = config_text(prefix, "1h"), config_text(prefix, "10m")
    bad_text = v2_text.replace("cooldown: 10m", "cooldwn: 10m")
    files = {}
    for name, text in (("v1", v1_text), ("v2", v2_text), ("bad", bad_text)):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text)

    def config_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scenetrigger.cli.main", "config", "--broker", kafka_bootstrap,
             "--topic-prefix", prefix, *map(str, args)], cwd=REPO, capture_output=True,
            text=True, timeout=90, check=False, env={**os.environ, **TOKENS})

    pushed = config_cli("push", files["v1"], "-m", "start")
    assert pushed.returncode == 0, pushed.stderr
    follow = ["--config-store", "kafka", "--reload-interval", "500ms"]
    worker = start_worker(tmp_path, "w", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "memory", *follow])
    common = ["--broker", kafka_bootstrap, "--topic-prefix", prefix, "--redis-url", redis_url,
              *follow]
    journeys_port, deliver_port, serve_port = free_port(), free_port(), free_port()
    journeys = _popen(tmp_path, "journeys", [
        "journeys", *common, "--group", f"{prefix}-j", "--redis-prefix", f"{prefix}:",
        "--metrics-port", str(journeys_port)], journeys_port)
    deliver = _popen(tmp_path, "deliver", [
        "deliver", *common, "--group", f"{prefix}-d", "--metrics-port", str(deliver_port)],
        deliver_port)
    serve = _popen(tmp_path, "serve", ["serve", *common, "--port", str(serve_port)],
                   serve_port)
    collector_port = free_port()
    collector = _popen(tmp_path, "collector", [
        "collector", "--broker", kafka_bootstrap, "--topic-prefix", prefix, "--port",
        str(collector_port), "--topic", f"{prefix}.events", "--dead-letter-topic",
        f"{prefix}.collector-rejects", "--no-auth", *follow], collector_port)
    procs = [worker, journeys, deliver, serve, collector]

    def everywhere(digest: str) -> bool:
        return all(p.metric("scenetrigger_config_version_info", digest=digest) == 1
                   for p in procs)

    def failures() -> list[float]:
        return [p.metric("scenetrigger_config_reload_failures_total") for p in procs]

    try:
        wait_for("every process on v1", lambda: everywhere(digest_of(v1_text)), 150, procs)
        assert failures() == [0, 0, 0, 0, 0]

        pushed = config_cli("push", files["v2"], "-m", "shorter cooldown")
        assert pushed.returncode == 0, pushed.stderr
        wait_for("every process on v2", lambda: everywhere(digest_of(v2_text)), 60, procs)
        assert all(p.metric("scenetrigger_config_version_info", digest=digest_of(v1_text)) == 0
                   for p in procs)  # the old digest's series is gone

        refused = config_cli("push", files["bad"], "-m", "typo")
        assert refused.returncode == 1
        assert "scene 'arrive', field 'cooldwn': unknown field (did you mean 'cooldown'?)" \
            in refused.stderr
        assert len(config_cli("log").stdout.splitlines()) == 2  # nothing stored

        # A version none of them can validate, written past push's check:
        store = KafkaVersionStore(kafka_bootstrap, f"{prefix}.config")

        async def write_raw() -> None:
            try:
                await store.append(ConfigVersion(3, digest_of(bad_text), "raw", 0, "raw",
                                                 bad_text, ""))
            finally:
                await store.close()

        asyncio.run(write_raw())
        wait_for("every process refusing v3", lambda: failures() == [1, 1, 1, 1, 1], 60, procs)
        assert everywhere(digest_of(v2_text))

        back = config_cli("rollback", "1", "-m", "back to the start")
        assert back.returncode == 0, back.stderr
        wait_for("every process back on v1", lambda: everywhere(digest_of(v1_text)), 60, procs)
        log = config_cli("log").stdout.splitlines()
        assert log[0].split()[0] == "v4" and "ops" in log[0] and "back to the start" in log[0]
    finally:
        for proc in procs:
            proc.stop()
    for proc in procs:
        assert "Traceback" not in proc.log_path.read_text(errors="replace"), proc.log_tail()
