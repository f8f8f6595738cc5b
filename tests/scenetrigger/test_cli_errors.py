"""A Kafka or Redis that cannot be reached is one line and exit status 1,
whichever command touches it first, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import DATA

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
