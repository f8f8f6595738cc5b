"""Identity on real Kafka, Redis and SMTP: an anonymous id browses, then an
`identify` event names the known user (on another partition); the
anonymous views merge into the known user's state, the next anonymous view
counts for the known user, the repeat scene fires under the known id, and
`scenetrigger deliver` mails the known user's address from the directory."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiosmtpd.controller import Controller

from tests.agents.worker_support import (
    WorkerProcess,
    all_committed,
    read_topic,
    send_raw,
    start_cli,
    start_worker,
    unique,
    wait_for,
)
from tests.channels.receivers import SmtpSink
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
PARTITIONS = 4


def partition(user: str) -> int:
    chosen: int = DefaultPartitioner()(user.encode(), list(range(PARTITIONS)),
                                       list(range(PARTITIONS)))
    return chosen


def config_text(run: str, smtp_port: int) -> str:
    return f"""
scenes:
  rv: {{kind: repeat, when: {{type: view}}, per: product_id, count: 3, within: 1h}}
delivery:
  redis_prefix: "id{run}:"
  quiet_hours: {{enabled: false}}
  tracking: {{base_url: "http://127.0.0.1:9/"}}
channels:
  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none,
          sender: "Shop <news@shop.example>", postal_address: "Shop Ltd, 1 Main St, Springfield"}}
content:
  inherit: false
  scenes:
    rv:
      fallback:
        channels: [mail]
        subject: "${{user.first_name}}, still thinking about ${{key}}?"
        text: "It is still here."
"""


def view(user: str, ts: int) -> tuple[bytes, bytes]:
    return user.encode(), orjson.dumps({"user_id": user, "ts": ts, "type": "view",
                                        "product_id": "p1"})


def start_deliver(tmp: Path, bootstrap: str, prefix: str, config: Path,
                  redis_url: str) -> WorkerProcess:
    port = free_port()
    log_path = tmp / "deliver.log"
    args = ["deliver", "--config", str(config), "--broker", bootstrap, "--topic-prefix", prefix,
            "--group", f"{prefix}-deliver", "--redis-url", redis_url, "--metrics-port", str(port)]
    return start_cli(log_path, "deliver", args, port,
                     {"SCENETRIGGER_TRACKING_SECRET": "identity-test-secret"})


def test_identify_merges_across_partitions_and_fires_for_the_known_user(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    anon = f"anon-{run}"
    known = next(k for k in (f"user-{run}-{i}" for i in range(100))
                 if partition(k) != partition(anon))
    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config_text(run, smtp.port))
    users = tmp_path / "users.csv"
    users.write_text(f"user_id,email,attr.first_name\n{known},{known}@example.com,Li\n")
    imported = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "users", "import",
                               str(users), "--redis-url", redis_url, "--prefix", f"id{run}:"],
                              check=False, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    prefix = unique("t-identity")
    events = f"{prefix}.events"
    flags = ["--store", "memory", "--commit-interval", "200ms", "--clock", "event"]
    now = int(time.time() * 1000)
    worker = start_worker(tmp_path, "w", kafka_bootstrap, prefix, prefix, flags, cfg)
    deliver = start_deliver(tmp_path, kafka_bootstrap, prefix, cfg, redis_url)
    try:
        wait_for("4 partitions", lambda: worker.metric("scenetrigger_partitions") == 4, 120,
                 [worker])
        identify = orjson.dumps({"user_id": anon, "ts": now + 2, "type": "identify",
                                 "known_id": known})
        send_raw(kafka_bootstrap, events, [view(anon, now), view(anon, now + 1),
                                           (anon.encode(), identify)])
        wait_for("the identify committed", lambda: all_committed(kafka_bootstrap, prefix,
                                                                 events), 60, [worker])
        # Two views so far: nothing fired for either id.
        assert worker.metric("scenetrigger_triggers_total", scene="rv") == 0
        send_raw(kafka_bootstrap, events, [view(anon, now + 3)])
        wait_for("the repeat scene", lambda: worker.metric(
            "scenetrigger_triggers_total", scene="rv") == 1, 60, [worker])
        fired = read_topic(kafka_bootstrap, f"{prefix}.triggers")
        assert [(r["user_id"], r["key"]) for r in fired] == [(known, "p1")]
        assert fired[0]["profile"][0] == 3  # the known user's profile counts all three views
        wait_for("the mail", lambda: bool(sink.received), 60, [worker, deliver])
        _from, rcpt, mail = sink.received[0]
        assert rcpt == [f"{known}@example.com"]
        assert mail["Subject"] == "Li, still thinking about p1?"
        assert mail["List-Unsubscribe"].startswith("<http://127.0.0.1:9/unsubscribe/email?u=")
    finally:
        deliver.stop()
        worker.stop()
        smtp.stop()
    assert worker.process.returncode == 0, worker.log_tail()
