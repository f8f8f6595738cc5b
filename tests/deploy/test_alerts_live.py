"""Debian's ``prometheus`` on loopback scraping a real worker, collector and
deliver (real Kafka and Redis): every series the Grafana dashboard and the
alert rules read exists, the event dead-letter alert fires while malformed
events are fed, and the config-reload alert fires after a bad edit.

The rules are deploy/alerts.yml with every ``for:`` shortened (a test copy);
Prometheus scrapes and evaluates each second."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.agents.worker_support import (
    WorkerProcess,
    send_raw,
    start_cli,
    start_worker,
    unique,
    wait_for,
)
from tests.deploy.test_alerts import ALERTS, rules
from tests.deploy.test_deploy_files import DEPLOY, METRIC
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCENES = """
scenes:
  arrive:
    kind: arrival
    when: {type: cart}
"""


def _deliver_config(run: str) -> str:
    return SCENES + f"""
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
"""


def _popen(tmp: Path, name: str, args: list[str], port: int) -> WorkerProcess:
    return start_cli(tmp / f"{name}.log", name, args, port)


class Prometheus:
    def __init__(self, tmp: Path, targets: dict[str, int]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: scripts/run-tests.sh installs it (apt)"
        quick = yaml.safe_load(ALERTS.read_text())
        for group in quick["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "2s"
        (tmp / "alerts.yml").write_text(yaml.safe_dump(quick))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "alerts.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log_path = tmp / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def up(self) -> bool:
        try:
            targets = self.api("targets")["activeTargets"]
        except OSError:
            return False
        return bool(targets) and all(t["health"] == "up" for t in targets)

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("alerts")["alerts"]
                if a["state"] == "firing"}

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _series_used() -> set[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [rule["expr"] for rule in rules()]
    return {name for expr in exprs for name in METRIC.findall(expr)}


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events", data=body,
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_prometheus_sees_every_series_and_fires_the_dead_letter_alert(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    prefix = unique("t-alerts")
    scenes = tmp_path / "scenes.yaml"
    scenes.write_text(SCENES)
    deliver_config = tmp_path / "deliver.yaml"
    deliver_config.write_text(_deliver_config(prefix))
    worker = start_worker(tmp_path, "w", kafka_bootstrap, prefix, prefix,
                          ["--clock", "event", "--store", "memory", "--reload-interval", "1s"],
                          scenes)
    collector_port = free_port()
    collector = _popen(tmp_path, "collector", [
        "collector", "--broker", kafka_bootstrap, "--port", str(collector_port),
        "--topic", f"{prefix}.events", "--dead-letter-topic", f"{prefix}.collector-rejects",
        "--no-auth"],
        collector_port)
    deliver_port = free_port()
    deliver = _popen(tmp_path, "deliver", [
        "deliver", "--config", str(deliver_config), "--broker", kafka_bootstrap,
        "--topic-prefix", prefix, "--group", f"{prefix}-deliver", "--redis-url", redis_url,
        "--metrics-port", str(deliver_port)], deliver_port)
    procs = [worker, collector, deliver]
    prometheus = Prometheus(tmp_path, {"worker": worker.metrics_port,
                                       "collector": collector_port, "deliver": deliver_port})
    stop_feeding = threading.Event()
    feeder: threading.Thread | None = None
    try:
        wait_for("4 partitions assigned",
                 lambda: worker.metric("scenetrigger_partitions") == 4, 150, procs)
        wait_for("prometheus scraping all three", prometheus.up, 60, procs)
        now = int(time.time() * 1000)
        good = [{"user_id": f"u{i}", "ts": now + i, "type": "cart"} for i in range(5)]
        assert _post(collector_port, orjson.dumps(good)) == 202
        assert _post(collector_port, orjson.dumps([{"user_id": "u", "type": "cart"}])) == 400
        wait_for("the carts delivered",
                 lambda: deliver.metric("scenetrigger_deliveries_total", channel="log",
                                        result="ok") == 5, 60, procs)

        used = _series_used()

        def missing() -> set[str]:
            return {name for name in used
                    if not prometheus.api("series", **{"match[]": name})}

        wait_for("every series scraped", lambda: not missing(), 30, procs)
        assert "ScenetriggerEventDeadLetters" not in prometheus.firing()

        def feed() -> None:
            while not stop_feeding.is_set():
                send_raw(kafka_bootstrap, f"{prefix}.events",
                         [(b"bad", b"{not json")] * 20)
                stop_feeding.wait(0.5)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        scenes.write_text(SCENES + "  broken: {kind: repeat}\n")  # rejected by the reload
        wait_for("the dead-letter and config alerts firing",
                 lambda: {"ScenetriggerEventDeadLetters", "ScenetriggerConfigReloadRejected"}
                 <= prometheus.firing(), 90, procs)
        rejected = worker.metric("scenetrigger_events_total", result="rejected",
                                 reason="invalid_json")
        reloads = worker.metric("scenetrigger_config_reload_failures_total")
        firing = prometheus.firing()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- prometheus ---\n{prometheus.log_tail()}") from None
    finally:
        stop_feeding.set()
        if feeder is not None:
            feeder.join(timeout=30)
        prometheus.stop()
        for proc in procs:
            proc.stop()
    assert rejected >= 20
    assert reloads == 1
    # Healthy delivery and collector (the 400 is the sender's fault): quiet.
    assert not firing & {"ScenetriggerDeliveryFailureRatio", "ScenetriggerCollector5xx",
                         "ScenetriggerDeliveryDeadLetters", "ScenetriggerNoEvents"}, firing
