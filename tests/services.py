"""Real Redis and Kafka for integration tests (session-scoped pytest fixtures).

- ``redis_url``: a private ``redis-server`` on a free loopback port, stopped at the end.
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


def start_redis(run_dir: Path, *, aof: bool = False, port: int | None = None) -> RedisServer:
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
            "--save", "", *persistence, "--logfile", str(log_path)]
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
