"""Fuzz harness (issue 11): >= 100,000 mutated events through the
collector's body parser, ``produce``'s record check, the worker's record
decoder, the engine with delivery (``replay --deliver dry-run``) and
``deliver``'s record handling. 0 crashes, every reject carries a known
reason, every path agrees on what is valid, and the valid events give the
same triggers and messages as they do alone.

``SCENETRIGGER_FUZZ_SCALE=10`` runs ten times as many (docs/guarantees.md has
the figures of such a run); the suite runs scale 1.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from agents.intake import Rejection, parse_items
from agents.producer import checked_event_value
from config.loader import load_config
from scenetrigger.cli.main import main
from tests.channels.test_kafka_delivery_unit import Harness
from tests.channels.test_poison_records import Buried
from triggers.errors import EventRejected
from triggers.events import REASONS, Event, Trigger, decode_event_record
from triggers.wire import encode_trigger

SCALE = int(os.environ.get("SCENETRIGGER_FUZZ_SCALE", "1"))
BASE = 2_000 * SCALE
PER_LINE = 50  # mutations of each base line: 100,000 at scale 1
T0 = 1_569_931_200_000
ZONES = ["Asia/Shanghai", "Europe/Paris", "America/New_York", "UTC"]
POISON = [b'"America"', b"1e400", b"100000000000000000000000000000", b"null", b"true",
          b'"' + b"x" * 3000 + b'"', b"[" * 300 + b"]" * 300, b'{"a":[{"b":[1]}]}',
          rb'"\ud800"', b'"\\u0000"', b"-0", b'""', b"[]", b"{}", b'"${text}"']
FIELDS = [b"user_id", b"ts", b"type", b"product_id", b"page", b"tz", b"price", b"category",
          b"query"]


def base_events(rng: random.Random) -> list[bytes]:
    out = []
    for n in range(BASE):
        user = f"u{rng.randrange(BASE // 10)}"
        ts = T0 + n * 1_000
        kind = rng.choice(["view", "view", "view", "cart", "purchase", "page"])
        event: dict[str, Any] = {"user_id": user, "ts": ts, "type": kind,
                                 "tz": rng.choice(ZONES)}
        if kind == "page":
            event["page"] = rng.choice(["/promo/a", "/promo/b", "/home"])
        else:
            event["product_id"] = f"p{rng.randrange(5)}"
            event["price"] = rng.choice([9.9, "19.90", 100])
        out.append(orjson.dumps(event))
    return out


def mutate(rng: random.Random, line: bytes) -> bytes:
    """One random mutation; most keep the line JSON-shaped, some do not."""
    op = rng.randrange(12)
    data = bytearray(line)
    if op == 0:  # flip a byte
        i = rng.randrange(len(data))
        data[i] = rng.randrange(256)
    elif op == 1:  # cut
        data = data[:rng.randrange(len(data))]
    elif op == 2:  # insert junk
        i = rng.randrange(len(data))
        data[i:i] = rng.randbytes(rng.randrange(1, 8))
    elif op in (3, 4, 5):  # a field set to a poison value (kept JSON)
        field = rng.choice(FIELDS)
        data = bytearray(bytes(data[:-1]) + b',"' + field + b'":' + rng.choice(POISON) + b"}")
    elif op == 6:  # a field removed
        obj = orjson.loads(line)
        obj.pop(rng.choice(["user_id", "ts", "type", "tz"]), None)
        data = bytearray(orjson.dumps(obj))
    elif op == 7:  # ts of another type or out of range
        obj = orjson.loads(line)
        obj["ts"] = rng.choice([str(obj["ts"]), float(obj["ts"]), 1 << 63, -(1 << 63) - 1,
                                True, None, obj["ts"] + 1])
        data = bytearray(_dumps(obj))
    elif op == 8:  # not an object
        data = bytearray(rng.choice([b"[" + line + b"]", b"1", b'"s"', b"null", b""]))
    elif op == 9:  # user id odd but maybe valid
        obj = orjson.loads(line)
        obj["user_id"] = rng.choice([0, -1, 2**64, "", " ", "x" * 300, 1.5, [1], "\u202e"])
        data = bytearray(_dumps(obj))
    elif op == 10:  # still valid: another user, another time
        obj = orjson.loads(line)
        obj["user_id"] = f"m{rng.randrange(50)}"
        obj["ts"] += rng.randrange(-5_000, 5_000)
        data = bytearray(orjson.dumps(obj))
    # op 11: unchanged (a duplicate of a valid line)
    return bytes(data).replace(b"\n", b" ").replace(b"\r", b" ")


def _dumps(obj: dict[str, Any]) -> bytes:
    """orjson refuses integers past 64 bits; write those by hand."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        parts = [orjson.dumps(k) + b":" + (str(v).encode() if type(v) is int else orjson.dumps(v))
                 for k, v in obj.items()]
        return b"{" + b",".join(parts) + b"}"


def mutated_stream() -> list[bytes]:
    rng = random.Random(11)
    lines = []
    for line in base_events(rng):
        lines.append(line)
        lines += [mutate(rng, line) for _ in range(PER_LINE - 1)]
    return lines


def through_the_collector(lines: list[bytes]) -> tuple[list[int], Counter[str]]:
    """Collector parse (NDJSON bodies of 1,000 lines), produce's check and
    the worker's batch decode: the indices of the lines taken as events."""
    taken: list[int] = []
    reasons: Counter[str] = Counter()
    ids = load_config().id_limits()  # the worker's: user_id and the scenes' per fields
    for start in range(0, len(lines), 1_000):
        body = b"\n".join(lines[start:start + 1_000])
        index_of = _nonblank_indices(lines, start, 1_000)
        values: list[tuple[int, bytes]] = []
        for index, item in parse_items(body, ndjson=True, max_events=1_000, ids=ids):
            if isinstance(item, Rejection):
                reasons[item.reason] += 1
                continue
            try:
                values.append((index_of[index], checked_event_value(item)))
            except EventRejected as exc:
                reasons[exc.reason] += 1
        record = b"[" + b",".join(v for _, v in values) + b"]"
        decoded = decode_event_record(record, ids=ids)
        assert len(decoded) == len(values)
        for (line_no, _), event in zip(values, decoded, strict=True):
            assert isinstance(event, Event), event  # valid in, valid out
            taken.append(line_no)
    return taken, reasons


def _nonblank_indices(lines: list[bytes], start: int, count: int) -> dict[int, int]:
    """Body line number -> stream index (the body joins lines with \\n)."""
    return {n: start + n for n in range(min(count, len(lines) - start))}


def _replay(tmp: Path, name: str, lines: list[bytes]) -> tuple[list[dict[str, Any]],
                                                             list[dict[str, Any]]]:
    path = tmp / f"{name}.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    out, rejects = tmp / f"{name}.out", tmp / f"{name}.rej"
    assert main(["replay", str(path), "--no-progress", "--out", str(out), "--rejects",
                 str(rejects), "--deliver", "dry-run"]) == 0
    triggers = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    rejected = ([orjson.loads(x) for x in rejects.read_bytes().splitlines()]
                if rejects.exists() else [])
    return triggers, rejected


def test_fuzzed_events_crash_nothing_and_change_no_valid_result(tmp_path: Path) -> None:
    lines = mutated_stream()
    assert len(lines) >= 100_000 * SCALE
    taken, collector_reasons = through_the_collector(lines)
    assert set(collector_reasons) <= set(REASONS)
    blank = sum(1 for line in lines if not line.strip())
    # Each line through the collector: taken, or refused with its reason (a line
    # dropped without one would only show below as replay's reject, not here).
    assert len(taken) + sum(collector_reasons.values()) + blank == len(lines)
    # replay reads the same lines (its own fast reader): the same ones are valid
    mixed, rejected = _replay(tmp_path, "mixed", lines)
    assert {r["reason"] for r in rejected} <= set(REASONS)
    assert len(taken) + len(rejected) + blank == len(lines)
    assert sorted({r["line"] for r in rejected}) == sorted(
        set(range(1, len(lines) + 1)) - {i + 1 for i in taken}
        - {i + 1 for i, line in enumerate(lines) if not line.strip()})
    # the valid events alone: the same triggers, contents and delivery decisions
    alone, none = _replay(tmp_path, "alone", [lines[i] for i in taken])
    assert none == []
    assert mixed == alone
    assert len(alone) > 100 * SCALE  # the stream does fire scenes
    print(f"fuzz: {len(lines)} lines, {len(taken)} valid, {len(rejected)} rejected "
          f"{dict(Counter(r['reason'] for r in rejected))}, {len(alone)} triggers")
    asyncio.run(_deliver_fuzz(alone))


async def _deliver_fuzz(triggers: list[dict[str, Any]]) -> None:
    """``deliver``'s record handling with mutated trigger records: every
    record is delivered, suppressed with a reason or dead-lettered; none raises."""
    rng = random.Random(12)
    h = Harness()
    h.delivery.dead_letter = buried = Buried()
    records = []
    for line in triggers[: 2_000 * SCALE]:
        value = encode_trigger(Trigger(line["scene"], line["user_id"], line["key"],
                                       line["ts"]), line["ts"])
        records.append(value)
        records += [mutate(rng, value) for _ in range(9)]
    outcomes: Counter[str] = Counter()
    for value in records:
        outcome = await h.delivery.handle(h.record("p.triggers", value))
        if outcome is None:
            outcomes["dead_lettered"] += 1
        else:
            assert outcome.status == "delivered" or outcome.reason, outcome
            outcomes[outcome.status] += 1
    assert sum(outcomes.values()) == len(records)
    assert outcomes["dead_lettered"] == len(buried.records)
    assert all(reason for _, _, reason, _ in buried.records)
    print(f"fuzz deliver: {len(records)} trigger records: {dict(outcomes)}")
