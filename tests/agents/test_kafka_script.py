"""scripts/kafka.sh reports a failed start with the broker's log and exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.services import KAFKA_SCRIPT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_start_on_a_taken_port_fails_with_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "SCENETRIGGER_KAFKA_RUN_DIR": str(tmp_path),
               "SCENETRIGGER_KAFKA_TIMEOUT": "120"}
        done = subprocess.run(
            [str(KAFKA_SCRIPT), "start", "--fresh", "--port", str(port)],
            env=env, capture_output=True, text=True, timeout=200, check=False,
        )
    assert done.returncode == 1
    assert done.stdout == ""  # no bootstrap address printed
    assert "Address already in use" in done.stderr
    assert "tail of" in done.stderr
    assert not (tmp_path / "bootstrap").exists()
    status = subprocess.run([str(KAFKA_SCRIPT), "status"], env=env, capture_output=True,
                            text=True, timeout=30, check=False)
    assert status.returncode == 3  # the failed broker was not left running
