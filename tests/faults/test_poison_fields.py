"""A poison value in every field that reaches a zone, a template or a
channel (issue 11): each is rejected with a reason or delivered, and every
other user's messages are exactly what they are without the poison.

In process (``replay --deliver dry-run``: the engine, content, policy and a
channel, the same pipeline ``deliver`` runs) for every field and value; the
live ``deliver`` process gets the same poison in the profiles of its
trigger records in test_deliver_kill's neighbour below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from scenetrigger.cli.main import main
from triggers.events import REASONS

T0 = 1_569_931_200_000  # 2019-10-01 12:00 UTC
FIELDS = ("tz", "category", "query", "product_id", "price", "page", "source", "session_id",
          "brand", "name")
# As JSON text: some (an integer past 64 bits, 1e400) no encoder would write.
POISON: list[bytes] = [orjson.dumps(v) for v in (
    "America", "US", "Etc", "zone.tab", "", " ", "\x00", "\u202e", "${text}", "${data.phone}",
    "{{7*7}}", "<script>alert(1)</script>", "x" * 100_000, 1e308, -1, 0, True, None, [], {},
    [[[[["deep"]]]]], {"a": {"b": {"c": 1}}}, "/promo/" + "a" * 5000, "%s%n%x",
    "../../etc/passwd")] + [b"100000000000000000000000000000", b"-1e400", rb'"\ud800"',
                            b"[" * 300 + b"]" * 300]


def good_events(user: str, ts: int) -> list[dict[str, Any]]:
    """Three views of one product (repeat), a promo page (arrival), a cart
    left alone (absence)."""
    events = [{"user_id": user, "ts": ts + i, "type": "view", "product_id": "p1",
               "category": "shoes", "tz": "Asia/Shanghai", "query": "red shoe"}
              for i in range(3)]
    events.append({"user_id": user, "ts": ts + 5, "type": "page", "page": "/promo/autumn"})
    events.append({"user_id": user, "ts": ts + 6, "type": "cart", "product_id": "p1"})
    return events


def poisoned(user: str, ts: int, field: str, value: bytes) -> list[tuple[int, bytes]]:
    """The user's good events with ``field`` set to the JSON text ``value``."""
    return [(e["ts"], orjson.dumps({k: v for k, v in e.items() if k != field})[:-1]
             + b',"' + field.encode() + b'":' + value + b"}") for e in good_events(user, ts)]


def _replay(tmp: Path, name: str, lines: list[bytes]) -> tuple[
        list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    path = tmp / f"{name}.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    out, summary, rejects = tmp / f"{name}.out", tmp / f"{name}.json", tmp / f"{name}.rej"
    code = main(["replay", str(path), "--no-progress", "--out", str(out), "--summary-json",
                 str(summary), "--rejects", str(rejects), "--deliver", "dry-run",
                 "--advance-to", str(T0 + 86_400_000)])
    assert code == 0
    triggers = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    rejected = [orjson.loads(x) for x in rejects.read_bytes().splitlines()] if (
        rejects.exists()) else []
    return triggers, orjson.loads(summary.read_bytes()), rejected


@pytest.mark.parametrize("field", FIELDS)
def test_poison_in_a_field_delivers_everyone_else(tmp_path: Path, field: str) -> None:
    goods = [f"g{i}" for i in range(3)]
    clean: list[tuple[int, bytes]] = []
    for n, user in enumerate(goods):
        clean += [(e["ts"], orjson.dumps(e)) for e in good_events(user, T0 + n * 1000)]
    mixed = list(clean)
    for n, value in enumerate(POISON):
        mixed += poisoned(f"p{n}", T0 + 500 + n * 7, field, value)  # among the good ones
    mixed.sort(key=lambda pair: pair[0])
    alone, _, _ = _replay(tmp_path, "clean", [line for _, line in clean])
    lines, summary, rejected = _replay(tmp_path, "mixed", [line for _, line in mixed])
    keep = ("scene", "user_id", "key", "ts", "delivery", "channel", "variant", "subject")
    goods_out = [{k: d.get(k) for k in keep} for d in lines if d["user_id"] in goods]
    assert goods_out == [{k: d.get(k) for k in keep} for d in alone]
    assert {d["delivery"] for d in alone} == {"delivered"}
    for line in lines:  # a poisoned user's trigger: delivered or suppressed with a reason
        assert line["delivery"] in ("delivered", "suppressed", "deferred", "failed")
        if line["delivery"] != "delivered":
            assert line.get("reason"), line
    for item in rejected:
        assert item["reason"] in REASONS, item
    assert summary["events_taken"] + len(rejected) == len(mixed)  # each line: taken or why not
