"""Helpers for the fan-out tests on real Kafka: the catalog-plus-clickstream
sample (tests/fanout_sample.py) with its history after the clickstream, the
replay and the pure pipeline's figures for it, and the two processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from scenetrigger.cli.main import main
from scenetrigger.runtime.catalog_join import joined, new_side, read_history
from tests.agents.worker_support import WorkerProcess, start_cli
from tests.fanout_sample import CONFIG, HOUR, SCENES, sample_events, sample_history
from tests.services import free_port
from triggers.events import Event

FAR = 1 << 50  # a clock past every digest's deadline
# The worker's partitions see events in another order than replay: a digest
# may then name its products in other groups; each product is still named once.
DIGESTS = {name for name, scene in SCENES.items() if scene.get("digest_ms")}
Key = tuple[str, str, str | None, int]


def write_inputs(tmp: Path) -> tuple[Path, Path, Path]:
    """Events, a history starting after the last event (so the interest a
    change sees does not depend on when the clickstream reached the catalog
    side) and the config."""
    events = sample_events()
    history = sample_history(events, shift=3 * HOUR)
    (tmp / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    (tmp / "catalog.jsonl").write_bytes(b"".join(orjson.dumps(h) + b"\n" for h in history))
    (tmp / "scenes.yaml").write_text(CONFIG)
    return tmp / "events.jsonl", tmp / "catalog.jsonl", tmp / "scenes.yaml"


def replayed(tmp: Path, events: Path, catalog: Path, config: Path) -> list[Key]:
    out = tmp / "replayed.jsonl"
    assert main(["replay", str(events), "--config", str(config), "--catalog-changes",
                 str(catalog), "--out", str(out), "--advance-to", str(FAR),
                 "--no-progress"]) == 0
    return [(t["scene"], t["user_id"], t["key"], t["ts"])
            for t in map(orjson.loads, out.read_bytes().splitlines())]


def pipeline_counts(events: Path, catalog: Path, config: Path) -> tuple[int, int, int]:
    """(clickstream events, interest messages the relay sends, fan-out events)."""
    from config.loader import load_config
    from triggers.interest import interest_keys

    cfg = load_config(str(config))
    side = new_side(cfg)
    raw = [orjson.loads(line) for line in events.read_bytes().splitlines()]
    records = [(n, Event(e["user_id"], e["ts"], e["type"], e)) for n, e in enumerate(raw, 1)]
    with catalog.open("rb") as lines:
        history = read_history(lines)
    fanned = sum(1 for _, item in joined(records, history, side)
                 if isinstance(item, Event) and item.fields.get("type") == "catalog_change")
    interest = sum(len(interest_keys(e)) for e in raw if side.book.counts(e["type"]))
    return len(raw), interest, fanned


def comparable(keys: Sequence[Key]) -> Counter[tuple[str, str, str | None, int | None]]:
    """Immediate scenes as they are; a digest as the products it names
    (its time depends on the grouping)."""
    out: Counter[tuple[str, str, str | None, int | None]] = Counter()
    for scene, user, key, ts in keys:
        if scene in DIGESTS:
            for item in orjson.loads(key or "[]"):
                out[(scene, user, item, None)] += 1
        else:
            out[(scene, user, key, ts)] += 1
    return out


def start_fanout(tmp: Path, bootstrap: str, prefix: str, config: Path,
                 name: str = "fanout", extra: Sequence[str] = ()) -> WorkerProcess:
    port = free_port()
    return start_cli(tmp / f"{name}.log", name,
                     ["fanout", "--broker", bootstrap, "--topic-prefix", prefix,
                      "--partitions", "4", "--state-dir", str(tmp / f"state-{name}"),
                      "--metrics-port", str(port), "--config", str(config),
                      "--session-timeout", "6s", "--commit-interval", "500ms", *extra], port)


def send_history(bootstrap: str, topic: str, catalog: Path) -> None:
    """Each record keyed by product, stamped with its history time."""
    asyncio.run(_send_history(bootstrap, topic, [orjson.loads(line) for line in
                                                 catalog.read_bytes().splitlines()]))


async def _send_history(bootstrap: str, topic: str, lines: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for line in lines:
            record = line["record"]
            await producer.send_and_wait(topic, value=orjson.dumps(record),
                                         key=record["product_id"].encode(),
                                         timestamp_ms=line["ts"])
    finally:
        await producer.stop()


def clock_events(partitions: int = 4) -> list[tuple[bytes, bytes]]:
    """One event per partition at ``FAR``: each partition's event clock
    passes every digest's deadline."""
    from agents.record_batching import partition_for

    out: dict[int, tuple[bytes, bytes]] = {}
    n = 0
    while len(out) < partitions:
        user = f"clock-{n}".encode()
        out.setdefault(partition_for(user, partitions), (user, orjson.dumps(
            {"user_id": user.decode(), "ts": FAR, "type": "clock"})))
        n += 1
    return list(out.values())
