"""Helpers for the worker integration tests: run ``scenetrigger worker`` as a
subprocess, read its /metrics, produce and read topics with plain aiokafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.services import REPO, free_port

Key = tuple[str, str, str | None, int]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerProcess:
    """One ``scenetrigger worker`` subprocess with its own state dir and metrics port."""

    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        # A busy worker's loop answers late on a loaded machine; a timeout reads
        # as 0 in metric(), which a test's last read must not mistake for the value.
        with urllib.request.urlopen(url, timeout=15) as resp:
            text: str = resp.read().decode()
            return text

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value, 0 when absent or when the worker is not serving."""
        try:
            text = self.metrics_text()
        except OSError:
            return 0.0
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
                       if labels else "")
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            if _same_sample(sample, want):
                total += float(value)
        return total

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no goodbye to the group, no flush, no commit."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def _same_sample(sample: str, want: str) -> bool:
    if "{" not in want:
        return sample == want
    name, _, labels = sample.partition("{")
    want_name, _, want_labels = want.partition("{")
    if name != want_name:
        return False
    got = set(labels.rstrip("}").split(","))
    return set(want_labels.rstrip("}").split(",")) <= got


def start_worker(tmp: Path, name: str, bootstrap: str, app_id: str, prefix: str,
                 extra: Sequence[str] = (), config: Path | None = None) -> WorkerProcess:
    port = free_port()
    state = tmp / f"state-{name}"
    log_path = tmp / f"worker-{name}.log"
    args = ["worker", "--broker", bootstrap, "--app-id", app_id, "--topic-prefix", prefix,
            "--partitions", "4", "--state-dir", str(state), "--metrics-port", str(port), *extra]
    if config is not None:
        args += ["--config", str(config)]
    return start_cli(log_path, name, args, port)


def start_cli(log_path: Path, name: str, args: Sequence[str], port: int,
              env: dict[str, str] | None = None) -> WorkerProcess:
    """``scenetrigger --log-level INFO ARGS`` as a subprocess logging to
    ``log_path`` (``port``: the one it serves its metrics or API on)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scenetrigger.cli.main", "--log-level", "INFO", *args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    return WorkerProcess(name, process, port, log_path)


# A wait's bound is a hang guard, never a speed target: on a loaded 2-core
# machine (load 26) a fan-out took 77 s to commit what a 60 s bound allowed.
MIN_WAIT_S = 180.0


def wait_for(what: str, check: Callable[[], bool], timeout_s: float,
             workers: Iterable[WorkerProcess] = (), interval_s: float = 0.25) -> None:
    """Poll until ``check()``; on timeout (``timeout_s``, at least
    :data:`MIN_WAIT_S`) fail with the workers' log tails."""
    timeout_s = max(timeout_s, MIN_WAIT_S)
    deadline = time.monotonic() + timeout_s
    workers = list(workers)
    while time.monotonic() < deadline:
        if check():
            return
        for w in workers:
            if not w.alive() and w.process.returncode not in (-signal.SIGKILL,):
                raise AssertionError(f"worker {w.name} exited ({w.process.returncode}) "
                                     f"while waiting for {what}:\n{w.log_tail()}")
        time.sleep(interval_s)
    tails = "\n".join(f"--- worker {w.name} ---\n{w.log_tail()}" for w in workers)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tails}")


# The two forms of an events record every worker test runs with: what the
# collector and `scenetrigger produce` write (many events per record), and one
# event per record keyed by user_id (any other producer).
RECORD_FORMS = ["batched", "one-event"]


def produce_args(form: str) -> list[str]:
    """`scenetrigger produce` flags writing records of this form."""
    return [] if form == "batched" else ["--batch-events", "1"]


def produce_file(bootstrap: str, path: Path, topic: str, rate: float | None = None,
                 timeout_s: float = 120, form: str = "batched",
                 ) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "scenetrigger.cli.main", "produce", str(path), "--broker",
            bootstrap, "--topic", topic, "--dead-letter-topic", topic + "-produce-rejects",
            "--partitions", "4", "--no-progress", *produce_args(form)]
    if rate is not None:
        args += ["--rate", str(rate)]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    assert done.returncode == 0, done.stderr
    return done


def replay_keys(path: Path, config: Path | None, tmp: Path) -> list[Key]:
    out = tmp / f"replay-{uuid.uuid4().hex[:6]}.jsonl"
    args = [sys.executable, "-m", "scenetrigger.cli.main", "replay", str(path), "--out", str(out),
            "--no-progress"]
    if config is not None:
        args += ["--config", str(config)]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [_key(orjson.loads(line)) for line in out.read_bytes().splitlines() if line]


def _key(rec: dict[str, Any]) -> Key:
    return (rec["scene"], rec["user_id"], rec["key"], rec["ts"])


def trigger_keys(records: Iterable[dict[str, Any]], scenes: set[str]) -> Counter[Key]:
    return Counter(_key(r) for r in records if r["scene"] in scenes)


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Every record of ``topic`` from the beginning to its current end (orjson values)."""
    from agents.export import read_topic as read_records

    return [orjson.loads(r.value) for r in asyncio.run(read_records(bootstrap, topic, timeout_s))]


def send_raw(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    asyncio.run(_send_raw(bootstrap, topic, messages))


def send_events(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]],
                form: str, partitions: int = 4) -> None:
    """Events keyed by user id, as one-event records (``send_raw``) or batched:
    one record per partition holding that partition's events in order."""
    if form == "one-event":
        send_raw(bootstrap, topic, messages)
        return
    from agents.record_batching import encode_batch, partition_for

    groups: dict[int, list[bytes]] = {}
    for key, value in messages:
        groups.setdefault(partition_for(key, partitions), []).append(value)
    asyncio.run(_send_raw(bootstrap, topic, [(None, encode_batch(values))
                                             for values in groups.values()],
                          partitions=list(groups)))


async def _send_raw(bootstrap: str, topic: str,
                    messages: Sequence[tuple[bytes | None, bytes]],
                    partitions: Sequence[int] | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n, (key, value) in enumerate(messages):
            partition = None if partitions is None else partitions[n]
            await producer.send_and_wait(topic, value=value, key=key, partition=partition)
    finally:
        await producer.stop()


def committed_offsets(bootstrap: str, group: str, topic: str,
                      partitions: int = 4) -> tuple[dict[int, int], dict[int, int]]:
    """``(committed offset, end offset)`` per partition of ``topic`` for ``group``."""
    return asyncio.run(_committed(bootstrap, group, topic, partitions))


async def _committed(bootstrap: str, group: str, topic: str,
                     partitions: int) -> tuple[dict[int, int], dict[int, int]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        found = await admin.list_consumer_group_offsets(group, partitions=tps)
        committed = {tp.partition: (meta.offset if meta is not None else -1)
                     for tp, meta in found.items()}
        ends = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
        return committed, ends
    finally:
        await consumer.stop()
        await admin.close()


def all_committed(bootstrap: str, group: str, topic: str) -> bool:
    """Every partition holding records has ``group``'s offset at its end (and
    the topic holds some). A broker that cannot answer yet (a killed node the
    client's metadata still lists, say) is "not yet", not a failure: the
    caller polls."""
    from aiokafka.errors import KafkaError

    try:
        committed, ends = committed_offsets(bootstrap, group, topic)
    except KafkaError:
        return False
    return sum(ends.values()) > 0 and all(
        committed.get(p, -1) >= end for p, end in ends.items() if end)


def assert_same_triggers(records: Iterable[dict[str, Any]], expected: Counter[Key],
                         scenes: set[str]) -> int:
    """The triggers of ``scenes``, deduplicated by ``trigger_id`` (a redone
    batch may send one again), equal ``expected``; returns how many
    duplicates there were."""
    records = list(records)
    unique_records = {r["trigger_id"]: r for r in records}
    got = trigger_keys(unique_records.values(), scenes)
    missing = expected - got
    extra = got - expected
    assert not missing, f"lost {sum(missing.values())} triggers, e.g. {list(missing)[:5]}"
    assert not extra, f"{sum(extra.values())} triggers replay does not have: {list(extra)[:5]}"
    return len(records) - len(unique_records)
