"""`scenetrigger deliver` during a config experiment (issue 24.6), on real
Kafka and real Redis: v1 is pushed, v2 (the same scenes, another subject) is
pushed with ``--experiment 50%`` (before deliver starts, or while it runs on
v1); deliver follows the store and each user's
inbox message carries the subject of the version of their arm, the arm
computed here from the documented hash (blake2b)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.versions import digest_of
from tests.agents.worker_support import unique
from tests.channels.test_deliver_kafka import (
    inbox_messages,
    produce,
    records,
    start_deliver,
    stop,
    until,
)
from tests.scenetrigger.test_config_experiment_live import TOKENS, candidate
from tests.services import REPO
from triggers.events import Trigger
from triggers.wire import encode_trigger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
PROMO = "promo_arrival"


def config_text(run: str, subject: str) -> str:
    return yaml.safe_dump({
        "scenes": {PROMO: {"kind": "arrival", "when": {"page": {"prefix": "/promo"}},
                           "per": "page", "cooldown": "1h"}},
        "channels": {"inbox": {"type": "inbox", "redis_url_env": "DELIVER_TEST_REDIS",
                               "key_prefix": f"{run}:inbox"}},
        "content": {"scenes": {PROMO: {"fallback": {"channels": ["inbox"], "subject": subject,
                                                    "text": "The sale is on."}}}},
        "delivery": {"default_timezone": "UTC", "quiet_hours": {"enabled": False},
                     "redis_prefix": f"{run}:"},
    })


@pytest.mark.parametrize("pushed", ["before the start", "while running"])
async def test_deliver_sends_each_user_the_content_of_their_arm(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path, pushed: str) -> None:
    run, prefix = unique("arm"), unique("t-arms")
    base, trial = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    base.write_text(config_text(run, "Base sale"))
    trial.write_text(config_text(run, "Candidate sale"))
    store = ["--broker", kafka_bootstrap, "--topic-prefix", prefix]

    def cli(*args: str | Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "scenetrigger.cli.main", *map(str, args)], cwd=REPO,
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, **TOKENS})
        assert done.returncode == 0, done.stderr

    cli("config", "push", base, "-m", "base", *store)

    def push_trial() -> None:
        cli("config", "push", trial, "-m", "new subject", "--experiment", "50%", *store)

    if pushed == "before the start":  # deliver reads the store before it consumes
        push_trial()
    users = [f"{run}-u{i}" for i in range(30)]
    arm = {u: candidate(2, u) for u in users}
    assert 0 < sum(arm.values()) < len(users)
    (tmp_path / "none.jsonl").write_text("")  # no products: the fallback needs none
    deliver = start_deliver(tmp_path, "arms", kafka_bootstrap, prefix, f"{prefix}-g",
                            base, tmp_path / "none.jsonl", redis_url,
                            ["--config-store", "kafka", "--reload-interval", "500ms"])
    try:
        if pushed == "while running":  # the reloader swaps in the armed pipeline
            v1 = digest_of(base.read_text())

            def in_force(value: float) -> Any:
                return lambda: deliver.metric("scenetrigger_config_version_info",
                                              digest=v1) == value

            await until("deliver on v1", in_force(1), 120, [deliver])
            push_trial()
            await until("deliver on the experiment", in_force(0), 60, [deliver])
        now = time.time_ns() // 1_000_000
        triggers = [Trigger(PROMO, u, "/promo/autumn", now + i) for i, u in enumerate(users)]
        await produce(kafka_bootstrap, f"{prefix}.triggers",
                      [(t.user_id, encode_trigger(t, now + 50)) for t in triggers])
        await until("every trigger delivered", lambda: records(
            deliver, "trigger", "delivered") >= len(users), 180, [deliver])
        inbox: list[dict[str, Any]] = await inbox_messages(redis_url, f"{run}:inbox", users)
        got = {m["user_id"]: m["subject"] for m in inbox}
        assert len(inbox) == len(users)  # one message per user, one version each
        assert got == {u: "Candidate sale" if arm[u] else "Base sale" for u in users}
        assert await stop(deliver) == 0, deliver.log_tail()
        assert "SIGTERM: stopping" in deliver.log_tail(), deliver.log_tail()
    finally:
        deliver.stop()
    assert "Traceback" not in deliver.log_path.read_text(errors="replace"), deliver.log_tail()
