"""``make redis-up`` starts the dev Redis with the append-only file that
``deliver`` needs (docs/guarantees.md): a restart keeps the dead letters."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.services import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_make_redis_up_runs_with_aof(tmp_path: Path) -> None:
    # Never skipped (team rule): without redis-server this fails, naming what to install.
    assert shutil.which("redis-server") is not None, "redis-server not installed (apt-get install redis-server)"
    env = {**os.environ, "SCENETRIGGER_REDIS_RUN_DIR": str(tmp_path)}
    up = subprocess.run(["make", "-s", "redis-up"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=30, check=False)
    try:
        assert up.returncode == 0, up.stderr
        url = up.stdout.strip().splitlines()[-1]
        client = redis.Redis.from_url(url)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.info("persistence")["aof_enabled"] == 1
        finally:
            client.close()
    finally:
        subprocess.run(["make", "-s", "redis-down"], cwd=REPO, env=env, capture_output=True,
                       timeout=30, check=False)
