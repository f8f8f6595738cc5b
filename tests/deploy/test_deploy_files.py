"""Lint of the deploy files (no Docker engine here): they parse, the commands
they run are valid scenetrigger invocations, and every metric the dashboard
plots is one the code registers."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.collector import CollectorMetrics
from agents.metrics import WorkerMetrics
from channels.infra_retry import InfraMetrics
from channels.policy.decide import PolicyMetrics
from channels.transports.registry import DeliveryMetrics
from scenetrigger.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
METRIC = re.compile(r"\bscenetrigger_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
REQUIRED_PANELS = {  # what an operator must see, by metric
    "scenetrigger_events", "scenetrigger_triggers", "scenetrigger_event_to_trigger_seconds",
    "scenetrigger_timer_lag_seconds", "scenetrigger_consumer_lag", "scenetrigger_deliveries",
    "scenetrigger_suppressed",
}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _registered_metrics() -> set[str]:
    registry = CollectorRegistry()
    WorkerMetrics.create(registry)
    CollectorMetrics.create(registry)
    DeliveryMetrics.on(registry)
    PolicyMetrics.on(registry)
    InfraMetrics.on(registry)
    return {metric.name for metric in registry.collect()}


def _base_name(sample: str) -> str:
    for suffix in SUFFIXES:
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample


SCENETRIGGER_SERVICES = ("worker", "collector", "journeys", "deliver", "serve")
MOUNTED_CONFIG = "/etc/scenetrigger/config.yaml"


def _argv(service: str) -> list[str]:
    """The service's command, its mounted config path read from the repo."""
    command = _compose()["services"][service]["command"]
    argv = [str(a) for a in (command if isinstance(command, list) else shlex.split(command))]
    return [str(DEPLOY / "scenetrigger.yaml") if a == MOUNTED_CONFIG else a for a in argv]


def _flag(service: str, name: str) -> str:
    argv = _argv(service)
    return argv[argv.index(name) + 1]


def test_compose_has_the_whole_stack() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "redis", "prometheus", "grafana", *SCENETRIGGER_SERVICES}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


@pytest.mark.parametrize("service", SCENETRIGGER_SERVICES)
def test_compose_commands_parse_with_the_cli(service: str) -> None:
    argv = _argv(service)
    args = build_parser(argv).parse_args(argv)
    assert args.command == service
    assert callable(args.run)


@pytest.mark.parametrize("service", ["worker", "journeys", "deliver", "serve"])
def test_compose_services_share_the_mounted_config(service: str) -> None:
    assert _compose()["services"][service]["command"].count(MOUNTED_CONFIG) == 1
    volumes = _compose()["services"][service]["volumes"]
    assert f"./scenetrigger.yaml:{MOUNTED_CONFIG}:ro" in volumes


def test_deploy_config_is_valid_with_the_shipped_scenes() -> None:
    from config.loader import load_config

    deploy = load_config(DEPLOY / "scenetrigger.yaml")
    shipped = load_config(REPO / "config" / "scenes.yaml")
    assert deploy.scene_list() == shipped.scene_list()
    assert "inbox" in deploy.channels
    assert deploy.strategies.all_journeys()  # the reactivation strategy runs


def test_prometheus_scrapes_every_process_compose_runs() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    expected = {f"{name}:{_flag(name, '--metrics-port')}" for name in
                ("worker", "journeys", "deliver")}
    expected |= {f"{name}:{_flag(name, '--port')}" for name in ("collector", "serve")}
    assert targets == expected
    # Prometheus runs in another container: a loopback listener cannot be scraped.
    for name in ("worker", "journeys", "deliver"):
        assert _flag(name, "--metrics-host") == "0.0.0.0"
    for name in ("collector", "serve"):
        assert _flag(name, "--host") == "0.0.0.0"


def test_worker_metrics_host_reaches_the_settings() -> None:
    from scenetrigger.cli.run.worker import build_settings

    argv = _argv("worker")
    assert build_settings(build_parser(argv).parse_args(argv)).metrics_host == "0.0.0.0"
    default = ["worker", "--metrics-port", "9100"]
    assert build_settings(build_parser(default).parse_args(default)).metrics_host == "127.0.0.1"
    journeys = ["journeys", "--metrics-port", "9101", "--metrics-host", "0.0.0.0"]
    assert build_parser(journeys).parse_args(journeys).metrics_host == "0.0.0.0"
    assert build_parser(journeys[:3]).parse_args(journeys[:3]).metrics_host == "127.0.0.1"


def test_dashboard_metrics_exist_in_the_code() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {_base_name(name) for expr in exprs for name in METRIC.findall(expr)}
    registered = _registered_metrics()
    assert used - registered == set()
    assert used >= REQUIRED_PANELS
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    compose = _compose()["services"]["grafana"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "scenetrigger.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = [v.split(":")[1] for v in compose["volumes"]]
    assert any(m.startswith(path + "/") for m in mounts)
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    assert uids == {source["datasources"][0]["uid"]}


def test_dockerfile_is_slim_non_root_and_copies_what_exists() -> None:
    lines = [ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["scenetrigger"]' in lines
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    # every package pyproject installs (the image once lacked strategies/)
    include = tomllib.loads((REPO / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {name.rstrip("*") for name in include}
    copied = {ln.split()[1] for ln in lines if ln.startswith("COPY ")}
    assert packages - copied == set(), f"Dockerfile does not copy {packages - copied}"
