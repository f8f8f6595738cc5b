"""A Kafka or Redis that cannot be reached is one line and exit status 1,
whichever command touches it first, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture
def http_port() -> Iterator[int]:
    """A real HTTP server on a loopback port: something listens, but not Kafka."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("args", [
    ["produce", str(DATA / "otto-sample.jsonl"), "--broker", "127.0.0.1:{port}"],
    ["export", "events", "--broker", "127.0.0.1:{port}", "--out", "{tmp}/x.jsonl"],
    ["worker", "--broker", "127.0.0.1:{port}", "--state-dir", "{tmp}/state"],
])
def test_a_broker_port_of_another_service_fails_fast_as_a_closed_one(
        args: list[str], tmp_path: Path, http_port: int) -> None:
    """It waited aiokafka's 40 s request timeout (40.7 s measured)."""

    def failure(port: int) -> tuple[str, float]:
        argv = [a.format(port=port, tmp=tmp_path) for a in args]
        started = time.monotonic()
        done = subprocess.run([str(CLI), *argv], capture_output=True, timeout=90, check=False)
        err = done.stderr.decode()
        assert done.returncode == 1, err
        assert "Traceback" not in err
        assert f"127.0.0.1', {port})]: 127.0.0.1:{port} " in err
        return err.split("Unable to bootstrap")[0].replace(str(port), "PORT"), \
            time.monotonic() - started

    wrong, took = failure(http_port)
    closed, took_closed = failure(closed_port())
    assert "cannot reach Kafka" in wrong
    assert wrong == closed  # the same words for both
    # Within 20 s of the closed port's failure (the probe's 2 s deadline): the
    # CLI's own start-up, the same for both, is slow and uneven on a loaded
    # machine; the bug's 40 s request timeout still shows.
    assert took < took_closed + 20, f"took {took:.1f} s, a closed port {took_closed:.1f} s"


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
