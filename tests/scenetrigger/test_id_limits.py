"""Identifier lengths: a user_id or a scene's `per` value longer than
`engine.max_id_chars` (256) is rejected as `too_long` by every reader (the
JSONL fast and careful paths, rees46, OTTO) and by the worker; an OTTO `aid`
that is neither an integer nor a string is `wrong_type`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.app import SceneWorker
from config.loader import load_config, load_config_text
from config.models import AppConfig
from scenetrigger.cli.main import main
from scenetrigger.runtime.sources import REES46_HEADER, read_jsonl, read_otto, read_rees46
from tests.agents.test_app_unit import FakeMessage, settings
from triggers.errors import ConfigError, EventRejected
from triggers.events import (
    DEFAULT_MAX_ID_CHARS,
    REASON_TOO_LONG,
    Event,
    IdLimits,
    decode_event_line,
)

OK = "u" * DEFAULT_MAX_ID_CHARS
LONG = "u" * (DEFAULT_MAX_ID_CHARS + 1)
PER = IdLimits(DEFAULT_MAX_ID_CHARS, ("product_id", "page"))


def outcome(item: Event | EventRejected) -> str:
    return item.reason if isinstance(item, EventRejected) else "ok"


def line(**fields: Any) -> bytes:
    return orjson.dumps({"ts": 1, "type": "view", **fields})


LINES: list[tuple[bytes, str]] = [
    (line(user_id=OK), "ok"),
    (line(user_id=LONG), "too_long"),
    (line(user_id="x" * 1_000_000), "too_long"),  # 1 MB: within the line limit
    (line(user_id="é" * 257), "too_long"),  # characters, not bytes
    (line(user_id="é" * 256), "ok"),
    (line(user_id=18446744073709551615), "ok"),  # any 64-bit integer fits
    (line(user_id="a", product_id=OK), "ok"),
    (line(user_id="a", product_id=LONG), "too_long"),
    (line(user_id=7, product_id=LONG), "too_long"),  # careful path
    (line(user_id="a", page=LONG), "too_long"),
    (line(user_id="a", product_id=12345), "ok"),
    (line(user_id="a", product_id=["x" * 300]), "too_long"),  # compared as its JSON
    (line(user_id="a", product_id=["x"]), "ok"),
    (line(user_id="a", query=LONG), "ok"),  # not a per field: no limit
    (line(user_id=LONG, ts="x"), "wrong_type"),  # type errors first
]


def test_jsonl_fast_and_careful_paths_agree() -> None:
    fast = [outcome(item) for _, item in read_jsonl([raw + b"\n" for raw, _ in LINES],
                                                     1 << 21, PER)]
    careful = []
    for raw, _ in LINES:
        try:
            careful.append(outcome(decode_event_line(raw, 1 << 21, PER)))
        except EventRejected as exc:
            careful.append(exc.reason)
    assert fast == careful == [want for _, want in LINES]
    [(_, rejected)] = list(read_jsonl([line(user_id="a", page=LONG)], 1 << 21, PER))
    assert isinstance(rejected, EventRejected) and rejected.detail == \
        "page (a per key) has 257 characters, the limit is 256"


def test_without_per_fields_only_user_id_is_bounded() -> None:
    got = [outcome(item) for _, item in read_jsonl(
        [line(user_id="a", product_id=LONG), line(user_id=LONG)])]
    assert got == ["ok", "too_long"]


def test_rees46_rows() -> None:
    def row(user: str, product: str) -> bytes:
        return f"2019-10-01 00:00:00 UTC,view,{product},1,,b,1.0,{user},s".encode()

    rows = [REES46_HEADER.encode(), row("1", "p"), row(LONG, "p"), row("1", LONG), row(OK, OK)]
    assert [outcome(item) for _, item in read_rees46(rows, ids=PER)] == \
        ["ok", "too_long", "too_long", "ok"]


def test_otto_aid_must_be_an_integer_or_a_string() -> None:
    aids = [5, "p5", True, None, {"a": 1}, 1.5, [5], LONG]
    session = {"session": 1, "events": [
        {"ts": 10, "type": "clicks", **({} if aid is None else {"aid": aid})} for aid in aids]}
    got = [outcome(item) for _, item in read_otto([orjson.dumps(session)], ids=PER)]
    assert got == ["ok", "ok", "wrong_type", "ok", "wrong_type", "wrong_type", "wrong_type",
                   "too_long"]
    events = [item for _, item in read_otto([orjson.dumps(session)]) if isinstance(item, Event)]
    assert [e.fields.get("product_id") for e in events] == ["5", "p5", None, LONG]


CONFIG = """
engine: {max_id_chars: 20}
scenes:
  promo: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
"""


def config(text: str = CONFIG) -> AppConfig:
    return load_config_text(text)


def test_limit_is_configurable_and_has_a_floor() -> None:
    assert config().id_limits() == IdLimits(20, ("page",))
    assert load_config(None).id_limits() == IdLimits(256, ("product_id", "page"))  # shipped
    with pytest.raises(ConfigError, match="max_id_chars"):
        config(CONFIG.replace("20", "19"))


def test_replay_rejects_long_ids_and_goes_on(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([
        line(user_id="a", type="page", page="/promo/1"),
        line(user_id="b" * 21, type="page", page="/promo/1"),
        line(user_id="c", type="page", page="/promo/" + "x" * 20),
        line(user_id="d", type="page", page="/promo/2"),
    ]) + b"\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    out, rejects, summary = tmp_path / "out", tmp_path / "rejects", tmp_path / "summary"
    assert main(["replay", str(events), "--config", str(cfg), "--no-progress", "--out", str(out),
                 "--rejects", str(rejects), "--summary-json", str(summary)]) == 0
    assert [orjson.loads(x)["user_id"] for x in out.read_bytes().splitlines()] == ["a", "d"]
    assert [(r["line"], r["reason"]) for r in map(orjson.loads, rejects.read_bytes().splitlines())
            ] == [(2, REASON_TOO_LONG), (3, REASON_TOO_LONG)]
    report = orjson.loads(summary.read_bytes())
    assert report["rejected"] == {REASON_TOO_LONG: 2} and report["users"] == 2


def test_worker_rejects_long_ids_by_its_current_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = SceneWorker(settings(tmp_path, store="memory", config=config()))
    dead: list[str] = []
    monkeypatch.setattr(worker, "_dead_letter",
                        lambda _m, reason, _d, _now, _i=None: dead.append(reason))
    host = worker.host(0)
    worker._take_record(host, FakeMessage(line(user_id="b" * 21)), 0)
    worker._take_record(host, FakeMessage(line(user_id="c", page="/promo/" + "x" * 20)), 0)
    assert dead == [REASON_TOO_LONG, REASON_TOO_LONG]
    worker.reconfigure(config(CONFIG.replace("20", "40")))
    worker._take_record(host, FakeMessage(line(user_id="b" * 21)), 0)
    assert dead == [REASON_TOO_LONG, REASON_TOO_LONG]  # taken under the new limit
    accepted = worker.metrics.registry.get_sample_value(
        "scenetrigger_events_total", {"result": "accepted", "reason": ""})
    assert accepted == 1


async def test_demo_rejects_long_ids_by_the_config() -> None:
    from scenetrigger.runtime.embedded import EmbeddedRuntime
    from scenetrigger.runtime.replay import new_host

    events = [{"user_id": user, "ts": 1000 + n, "type": "page", "page": page}
              for n, (user, page) in enumerate([("a", "/promo/1"), ("b" * 21, "/promo/1"),
                                                ("c", "/promo/" + "x" * 20), ("d", "/promo/2")])]
    runtime = EmbeddedRuntime(new_host(config()), events, start_ms=0, speed=1.0)
    fired = await runtime.step(10_000)
    assert [r.trigger.user_id for r in fired] == ["a", "d"]
    assert runtime.stats.rejected == {REASON_TOO_LONG: 2} and runtime.stats.events == 2
