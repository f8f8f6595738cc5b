"""A Kafka or Redis that cannot be reached is one line and exit status 1,
whichever command touches it first, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.paths import DATA
from tests.services import REPO

CLI = Path(sys.executable).with_name("scenetrigger")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("args", [
    ["produce", str(DATA / "otto-sample.jsonl"), "--broker", "127.0.0.1:{port}"],
    ["export", "events", "--broker", "127.0.0.1:{port}", "--out", "{tmp}/x.jsonl"],
    ["journeys", "--broker", "127.0.0.1:{port}", "--redis-url", "redis://127.0.0.1:{port}/0"],
])
def test_an_unreachable_broker_is_one_line(args: list[str], tmp_path: Path) -> None:
    port = closed_port()
    argv = [a.format(port=port, tmp=tmp_path) for a in args]
    done = subprocess.run([str(CLI), *argv], capture_output=True, timeout=90, check=False)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "Traceback" not in err
    assert "scenetrigger: cannot reach Kafka (" in err and f"127.0.0.1', {port}" in err


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_deliver_with_an_unreachable_redis_stops_at_start_with_one_line(
        kafka_bootstrap: str) -> None:
    """It used to start and wait for triggers it could never deliver."""
    port = closed_port()
    env = {**os.environ, "SCENETRIGGER_WEBHOOK_SECRET": "x",
           "SCENETRIGGER_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    done = subprocess.run([str(CLI), "deliver", "--broker", kafka_bootstrap, "--config",
                           str(REPO / "config" / "demo.yaml"), "--topic-prefix",
                           f"clierr{uuid.uuid4().hex[:8]}", "--metrics-port", "0"],
                          capture_output=True, timeout=100, check=False, env=env)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "scenetrigger: cannot reach Redis (" in err and "Traceback" not in err
