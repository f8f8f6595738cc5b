"""Reading back a topic that does not exist says so soon (not after the
whole read timeout: export's default is 5 minutes), with the topic's name."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agents.export import MISSING_TOPIC_WAIT_S

CLI = Path(sys.executable).with_name("scenetrigger")


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_export_of_a_missing_topic_fails_naming_it_long_before_its_timeout(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    done = subprocess.run([str(CLI), "export", topic, "--broker", kafka_bootstrap,
                           "--timeout", "300", "--out", str(tmp_path / "x.jsonl")],
                          capture_output=True, timeout=110, check=False)
    waited = time.monotonic() - started
    err = done.stderr.decode()
    assert done.returncode == 1 and f"topic {topic} not found" in err, err
    assert waited < MISSING_TOPIC_WAIT_S + 60  # well short of --timeout 300
