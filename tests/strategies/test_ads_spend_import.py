"""``scenetrigger audiences import-spend``: ad spend per platform, day and
audience checked row by row (a bad file stores nothing, each bad row named by
line and field) and kept in a real Redis; ``report --by channel`` without
``--spend`` reads it and gives what ``--spend FILE`` gives, both checked
against the cost per incremental conversion computed here from the
documented formula."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import orjson
import pytest
import redis

from scenetrigger.cli.main import main
from strategies.ads_roi import read_spend
from tests.strategies.test_ads_roi import AUDIENCE, DAY_MS, SHARE, _data, in_holdout
from triggers.errors import SceneTriggerError

pytestmark = [pytest.mark.integration]

GOOD = ("platform,day,audience,amount,currency\n"
        f"meta,2026-12-01,{AUDIENCE},60.5,EUR\n"
        f"meta,2026-12-02,{AUDIENCE},40,EUR\n"
        f"meta,2026-12-02,{AUDIENCE},9.5,EUR\n"  # same day again: summed in the file
        "tiktok,2026-12-01,lapsed,12,EUR\n")


def _wilson(x: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p, d = x / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


def newcombe(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p1 - p2 (method 10)."""
    (l1, u1), (l2, u2), p1, p2 = _wilson(x1, n1), _wilson(x2, n2), x1 / n1, x2 / n2
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def _setup(tmp_path: Path, prefix: str) -> tuple[list[str], Path]:
    records, events, _ = _data()
    out = tmp_path / "replay.jsonl"
    out.write_bytes(b"".join(orjson.dumps({"kind": "audience", "audience": r.audience,
                                           "user_id": r.user_id, "op": r.op, "ts": r.ts,
                                           "reason": r.reason}) + b"\n" for r in records))
    (tmp_path / "events.jsonl").write_bytes(b"".join(
        orjson.dumps({"user_id": e.user_id, "ts": e.ts, "type": e.type}) + b"\n"
        for e in events))
    config = tmp_path / "ads.yaml"
    config.write_text(orjson.dumps({
        "scenes": {"promo_arrival": {"kind": "arrival", "per": "page",
                                     "when": {"page": {"prefix": "/promo"}}}},
        "strategies": {"attribution": {"window": "1d"}},
        "delivery": {"redis_prefix": prefix},
        "ads": {"holdout": SHARE, "sinks": {
            "meta": {"type": "meta", "token_env": "T", "audiences": {AUDIENCE: "1"}},
            "tiktok": {"type": "tiktok", "token_env": "T", "advertiser_id": "7",
                       "audiences": {"lapsed": "9"}}}}}).decode())
    return [str(out), str(tmp_path / "events.jsonl"), "--by", "channel", "--config",
            str(config), "--json", "-"], config


def test_bad_rows_are_named_by_line_and_field_and_nothing_is_stored(
        tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"sp{uuid.uuid4().hex[:6]}:"
    _, config = _setup(tmp_path, prefix)
    bad = tmp_path / "bad.csv"
    bad.write_text("platform,day,audience,amount,currency\n"
                   f"meta,2026-12-01,{AUDIENCE},10,EUR\n"  # good, but the file is refused
                   f"meta,2026-02-30,{AUDIENCE},10,EUR\n"
                   f"meta,2026-12-01,{AUDIENCE},-1,EUR\n"
                   f"meta,2026-12-01,{AUDIENCE},10,euro\n"
                   f"meta,2026-12-01,,10,EUR\n")
    assert main(["audiences", "import-spend", str(bad), "--config", str(config),
                 "--redis-url", redis_url]) != 0
    assert capsys.readouterr().err.removeprefix("scenetrigger: ").splitlines() == [
        f"{bad}:3: day: want a date YYYY-MM-DD", f"{bad}:4: amount: want a number >= 0",
        f"{bad}:5: currency: want an ISO 4217 code (EUR, USD, ...)",
        f"{bad}:6: audience: empty"]
    unknown = tmp_path / "unknown.json"
    unknown.write_bytes(orjson.dumps([
        {"platform": "meta", "day": "2026-12-01", "audience": AUDIENCE, "amount": 1,
         "currency": "EUR"},
        {"platform": "google", "day": "2026-12-01", "audience": AUDIENCE, "amount": 1,
         "currency": "EUR"}]))
    assert main(["audiences", "import-spend", str(unknown), "--config", str(config),
                 "--redis-url", redis_url]) != 0
    assert capsys.readouterr().err == f"scenetrigger: {unknown}:2: platform: 'google' is no ads sink\n"
    with pytest.raises(SceneTriggerError, match="amount: not a number"):
        read_spend("s.json", orjson.dumps([{"platform": "meta", "day": "2026-12-01",
                                            "audience": "a", "amount": "lots",
                                            "currency": "EUR"}]))
    client = redis.Redis.from_url(redis_url)
    assert client.exists(f"{prefix}ads-spend") == 0  # nothing half-imported
    client.close()


def test_report_reads_imported_spend_as_it_reads_the_file(
        tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"sp{uuid.uuid4().hex[:6]}:"
    report, config = _setup(tmp_path, prefix)
    spend = tmp_path / "spend.csv"
    spend.write_text(GOOD)
    assert main(["audiences", "import-spend", str(spend), "--config", str(config),
                 "--redis-url", redis_url, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {
        "rows": 4, "days": 3, "stored": 3, "check": False, "totals": {"EUR": 122.0}}
    # again: the same days are replaced, not added
    assert main(["audiences", "import-spend", str(spend), "--config", str(config),
                 "--redis-url", redis_url, "--json"]) == 0
    capsys.readouterr()
    assert main(["report", *report, "--redis-url", redis_url]) == 0
    imported = orjson.loads(capsys.readouterr().out)
    assert main(["report", *report, "--spend", str(spend)]) == 0
    from_file = orjson.loads(capsys.readouterr().out)
    assert imported == from_file
    meta = next(r for r in imported["rows"] if r["channel"] == "meta")
    # independently: members in each arm, conversions within the day after entering
    records, events, _ = _data()
    first: dict[str, int] = {}
    for r in records:
        if r.op == "enter":
            first.setdefault(r.user_id, int(r.ts * 1000))
    buys: dict[str, list[int]] = {}
    for e in events:
        buys.setdefault(e.user_id, []).append(e.ts)
    arms = {True: [0, 0], False: [0, 0]}
    for user, since in first.items():
        arm = arms[in_holdout(user)]
        arm[0] += 1
        arm[1] += any(since <= t <= since + DAY_MS for t in buys.get(user, ()))
    (n_t, x_t), (n_c, x_c) = arms[False], arms[True]
    uplift = x_t / n_t - x_c / n_c
    assert (meta["reach"], meta["conversions"]) == (n_t, x_t)
    assert meta["spend"] == pytest.approx(60.5 + 40 + 9.5)
    assert meta["cost_per_incremental"] == pytest.approx(110.0 / (uplift * n_t))
    low, high = newcombe(x_t, n_t, x_c, n_c)
    assert meta["cost_low"] == pytest.approx(110.0 / (high * n_t))
    assert meta["cost_high"] == pytest.approx(110.0 / (low * n_t)) if low > 0 else \
        meta["cost_high"] is None
    tiktok = next(r for r in imported["rows"] if r["channel"] == "tiktok")
    assert (tiktok["spend"], tiktok["members"]) == (12.0, 0)
