"""Real Redis and Kafka for integration tests (session-scoped pytest fixtures).

- ``redis_url``: a private ``redis-server`` on a free loopback port, stopped at the end.
- ``redis_cluster``: a Redis Cluster of 3 masters and 3 replicas on free loopback ports
  (``redis-server --cluster-enabled yes`` x6 + ``redis-cli --cluster create``).
- ``kafka_bootstrap``: the broker given by ``SCENETRIGGER_KAFKA`` (host:port) if set,
  else one started with ``scripts/kafka.sh`` in a temp run dir and stopped at the end.

A service that cannot start fails the test with its log, never skips it
(team rule: tests are never skipped, under CI=true or not).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KAFKA_SCRIPT = REPO / "scripts" / "kafka.sh"
KAFKA_ENV = "SCENETRIGGER_KAFKA"
REDIS_START_TIMEOUT_S = 10.0
KAFKA_START_TIMEOUT_S = 240.0


class ServiceStartError(RuntimeError):
    """A test service could not start; the message carries its log tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass(frozen=True, slots=True)
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """kill -9: no shutdown save."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(run_dir: Path, *, aof: bool = False, port: int | None = None,
                extra: tuple[str, ...] = ()) -> RedisServer:
    """Start redis-server on a free loopback port (or ``port``) in ``run_dir``:
    no persistence, or with ``aof`` the append-only file fsynced on every
    write (what docs/guarantees.md requires); restarting with the same
    ``run_dir`` and ``port`` reads it back."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceStartError(
            "redis-server not found: run scripts/run-tests.sh (installs it) "
            "or apt-get install -y redis-server"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = run_dir / "redis.log"
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if aof else [
        "--appendonly", "no"]
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(run_dir),
            "--save", "", *persistence, "--logfile", str(log_path), *extra]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _redis_ping(port):
            return RedisServer(f"redis://127.0.0.1:{port}/0", port, process, log_path)
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)
    raise ServiceStartError(f"redis-server did not start on port {port}:\n{_tail(log_path)}")


CLUSTER_START_TIMEOUT_S = 60.0


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000, at most 65535) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cli(port: int, *args: str, timeout: float = 30) -> str:
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ServiceStartError(f"redis-cli -p {port} {' '.join(args)}: {done.stderr}{done.stdout}")
    return done.stdout


def _info(port: int, section: str) -> dict[str, str]:
    try:
        text = _cli(port, "INFO", section, timeout=5)
    except (ServiceStartError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass(slots=True)
class RedisCluster:
    """A Redis Cluster on loopback: ``nodes`` by port; ``url`` names the first
    node (a plain ``redis://`` URL: the client finds out it is a cluster)."""

    nodes: dict[int, RedisServer]
    run_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{next(iter(self.nodes))}/0"

    def masters(self) -> list[int]:
        """The ports of the live nodes that are masters now."""
        return [port for port, node in self.nodes.items() if node.process.poll() is None
                and _info(port, "replication").get("role") == "master"]

    def replica_of(self, master: int) -> int | None:
        for port, node in self.nodes.items():
            info = _info(port, "replication") if node.process.poll() is None else {}
            if info.get("role") == "slave" and info.get("master_port") == str(master):
                return port
        return None

    def wait_ok(self, timeout_s: float = CLUSTER_START_TIMEOUT_S, masters: int = 3,
                replicas: int = 3) -> None:
        """Until every live node says cluster_state:ok, ``masters`` nodes are
        masters and ``replicas`` replicas have their master link up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = [p for p, n in self.nodes.items() if n.process.poll() is None]
            roles = [_info(p, "replication") for p in live]
            up = sum(1 for r in roles if r.get("role") == "slave"
                     and r.get("master_link_status") == "up")
            if (all(_cli_ok(p) for p in live) and up == replicas
                    and sum(1 for r in roles if r.get("role") == "master") == masters):
                return
            time.sleep(0.2)
        raise ServiceStartError("the Redis Cluster did not reach cluster_state:ok:\n" + "\n".join(
            _tail(n.log_path, 10) for n in self.nodes.values()))

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.process.poll() is None:
                node.stop()


def _cli_ok(port: int) -> bool:
    try:
        return "cluster_state:ok" in _cli(port, "CLUSTER", "INFO", timeout=5)
    except (ServiceStartError, subprocess.TimeoutExpired):
        return False


def start_redis_cluster(run_dir: Path, *, masters: int = 3, replicas: int = 1) -> RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on free loopback
    ports, each node in its own directory under ``run_dir``; returns once
    the cluster is ok. A quick failover (node timeout 2 s) for the failure tests."""
    if shutil.which("redis-cli") is None:
        raise ServiceStartError("redis-cli not found: apt-get install -y redis-tools")
    nodes: dict[int, RedisServer] = {}
    cluster = RedisCluster(nodes, run_dir)
    try:
        for index in range(masters * (1 + replicas)):
            port = _cluster_port()
            node_dir = run_dir / f"node-{index}"
            nodes[port] = start_redis(node_dir, port=port, extra=(
                "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000"))
        _cli(next(iter(nodes)), "--cluster", "create",
             *[f"127.0.0.1:{p}" for p in nodes], "--cluster-replicas", str(replicas),
             "--cluster-yes", timeout=CLUSTER_START_TIMEOUT_S)
        cluster.wait_ok(masters=masters, replicas=masters * replicas)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass(frozen=True, slots=True)
class KafkaBroker:
    """One broker, or a cluster of ``nodes`` (scripts/kafka.sh --nodes: node k
    in ``run_dir/node-k``); ``bootstrap`` lists every node."""

    bootstrap: str
    run_dir: Path | None  # None: an external broker we must not stop
    nodes: int = 1

    def _env(self) -> dict[str, str]:
        return {**os.environ, "SCENETRIGGER_KAFKA_RUN_DIR": str(self.run_dir)}

    def stop(self) -> None:
        if self.run_dir is None:
            return
        subprocess.run(
            [str(KAFKA_SCRIPT), "stop"],
            env=self._env(),
            capture_output=True,
            timeout=60,
            check=False,
        )

    def node_address(self, node: int) -> str:
        """``127.0.0.1:port`` of node ``node`` (1-based) of a cluster."""
        assert self.run_dir is not None and self.nodes > 1
        return f"127.0.0.1:{(self.run_dir / f'node-{node}' / 'port').read_text().strip()}"

    def kill_node(self, node: int) -> None:
        """kill -9 one node of a cluster and wait until its process is gone."""
        assert self.run_dir is not None and self.nodes > 1
        pid = int((self.run_dir / f"node-{node}" / "kafka.pid").read_text())
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise ServiceStartError(f"kafka node {node} (pid {pid}) outlived kill -9 by 30 s")

    def start_missing(self) -> None:
        """Start the cluster's stopped nodes again (same ports and data)."""
        assert self.run_dir is not None
        done = subprocess.run([str(KAFKA_SCRIPT), "start"], env=self._env(),
                              capture_output=True, text=True, timeout=KAFKA_START_TIMEOUT_S,
                              check=False)
        if done.returncode != 0:
            raise ServiceStartError(f"scripts/kafka.sh start failed (exit {done.returncode}):\n"
                                    f"{done.stderr}{done.stdout}")


def _kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def start_kafka(run_dir: Path, nodes: int = 1) -> KafkaBroker:
    """Start a fresh broker (or a KRaft cluster of ``nodes`` on loopback, each
    node a broker and a controller) with scripts/kafka.sh in ``run_dir`` (jars
    cached across runs)."""
    env = {**os.environ, "SCENETRIGGER_KAFKA_RUN_DIR": str(run_dir)}
    env.pop("SCENETRIGGER_KAFKA_PORT", None)
    env.pop("SCENETRIGGER_KAFKA_NODES", None)
    # Readiness wait inside the script; a busy 2-core machine has needed 33 s.
    env.setdefault("SCENETRIGGER_KAFKA_TIMEOUT", "150")
    try:
        done = subprocess.run(
            [str(KAFKA_SCRIPT), "start", "--fresh", *(["--nodes", str(nodes)] if nodes > 1 else [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=KAFKA_START_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        KafkaBroker("", run_dir, nodes).stop()
        raise ServiceStartError(
            f"scripts/kafka.sh start timed out after {KAFKA_START_TIMEOUT_S:.0f}s:\n"
            f"{_tail(run_dir / 'logs' / 'server.log')}"
        ) from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ServiceStartError(
            f"scripts/kafka.sh start failed (exit {done.returncode}):\n{done.stderr}{done.stdout}"
        )
    return KafkaBroker(lines[-1].strip(), run_dir, nodes)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="scenetrigger-redis-") as tmp:
        try:
            server = start_redis(Path(tmp))
        except ServiceStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with tempfile.TemporaryDirectory(prefix="scenetrigger-redis-cluster-") as tmp:
        try:
            cluster = start_redis_cluster(Path(tmp))
        except ServiceStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get(KAFKA_ENV, "").strip()
    if external:
        if not _kafka_reachable(external):
            pytest.fail(f"{KAFKA_ENV}={external} is not reachable", pytrace=False)
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="scenetrigger-kafka-") as tmp:
        try:
            broker = start_kafka(Path(tmp))
        except ServiceStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    """Until ``GET /healthz`` on the loopback ``port`` answers; fails with the
    process's log when it exits or the time runs out."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
