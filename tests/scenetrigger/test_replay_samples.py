"""Replay of the real samples through the CLI: the figures of data/README.md,
trigger for trigger equal to the reference model; stdin and format detection."""

from __future__ import annotations

import csv
import subprocess
import sys
from calendar import timegm
from collections import Counter
from pathlib import Path
from time import strptime
from typing import Any

import orjson
import pytest
import yaml

from config.loader import DEFAULT_CONFIG_PATH
from scenetrigger.runtime.sources import detect_format
from tests.paths import DATA
from tests.triggers.reference import RefTrigger, run_reference

REES46 = DATA / "rees46-2019-10-01-sample.csv"
OTTO = DATA / "otto-sample.jsonl"
CLI = Path(sys.executable).with_name("scenetrigger")
SCENES = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())["scenes"]


def run_cli(*args: str | Path, stdin: bytes | None = None, tmp: Path,
            returncode: int = 0) -> tuple[list[RefTrigger], dict[str, Any], subprocess.CompletedProcess[bytes]]:
    """Run ``scenetrigger replay``; return its triggers, its summary and the process."""
    out, summary = tmp / "triggers.jsonl", tmp / "summary.json"
    done = subprocess.run(
        [str(CLI), "replay", *map(str, args), "--out", str(out), "--summary-json", str(summary),
         "--no-progress"],
        input=stdin, capture_output=True, timeout=120, check=False,
    )
    assert done.returncode == returncode, done.stderr.decode()
    triggers = []
    for line in out.read_bytes().splitlines():
        item = orjson.loads(line)
        triggers.append((item["scene"], item["user_id"], item["key"], item["ts"]))
    return triggers, orjson.loads(summary.read_bytes()), done


def rees46_rows(path: Path) -> list[dict[str, Any]]:
    """The rees46 preset read independently of scenetrigger.runtime.sources."""
    events = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            ts = timegm(strptime(row["event_time"], "%Y-%m-%d %H:%M:%S UTC")) * 1000
            event = {"user_id": row["user_id"], "ts": ts, "type": row["event_type"],
                     "product_id": row["product_id"], "category_id": row["category_id"],
                     "brand": row["brand"], "price": row["price"],
                     "session_id": row["user_session"]}
            if row["category_code"]:
                event["category"] = row["category_code"]
            events.append(event)
    return events


def otto_rows(path: Path) -> list[dict[str, Any]]:
    kinds = {"clicks": "view", "carts": "cart", "orders": "purchase"}
    events = []
    for line in path.read_bytes().splitlines():
        session = orjson.loads(line)
        for item in session["events"]:
            events.append({"user_id": session["session"], "ts": item["ts"],
                           "type": kinds[item["type"]], "product_id": item["aid"]})
    return events


def test_rees46_figures_and_reference(tmp_path: Path) -> None:
    triggers, summary, done = run_cli(REES46, tmp=tmp_path)
    assert summary["events_read"] == 8721
    assert summary["rejected"] == {}
    assert summary["triggers"] == {"repeat_view_no_purchase": 424, "cart_abandonment": 1,
                                   "promo_arrival": 0}
    assert summary["pending_timers"] == 29
    assert summary["users"] == 2594
    expected, pending = run_reference(SCENES, rees46_rows(REES46))
    assert triggers == expected
    assert len(pending) == 29
    assert b"424" in done.stderr  # the human summary goes to stderr


def test_otto_figures_and_reference(tmp_path: Path) -> None:
    triggers, summary, _ = run_cli(OTTO, tmp=tmp_path)
    assert summary["events_read"] == 862
    assert summary["triggers"] == {"repeat_view_no_purchase": 40, "cart_abandonment": 39,
                                   "promo_arrival": 0}
    assert summary["pending_timers"] == 0
    expected, pending = run_reference(SCENES, otto_rows(OTTO))
    assert triggers == expected
    assert pending == []
    assert Counter(t[0] for t in triggers) == {"repeat_view_no_purchase": 40,
                                               "cart_abandonment": 39}


def test_advance_to_fires_pending_timers(tmp_path: Path) -> None:
    rows = rees46_rows(REES46)
    later = rows[-1]["ts"] + 3_600_000
    triggers, summary, _ = run_cli(REES46, "--advance-to", str(later), tmp=tmp_path)
    expected, pending = run_reference(SCENES, rows, advance_to=later)
    assert triggers == expected
    assert pending == []
    assert summary["pending_timers"] == 0
    assert summary["triggers"]["cart_abandonment"] == 30


@pytest.mark.parametrize("source", [REES46, OTTO])
def test_stdin_dash_detects_the_format(tmp_path: Path, source: Path) -> None:
    from_file, summary_file, _ = run_cli(source, tmp=tmp_path)
    from_stdin, summary_stdin, _ = run_cli("-", stdin=source.read_bytes(), tmp=tmp_path)
    assert from_stdin == from_file
    assert summary_stdin["triggers"] == summary_file["triggers"]


def test_native_jsonl_equals_the_preset(tmp_path: Path) -> None:
    rows = rees46_rows(REES46)
    native = tmp_path / "events.jsonl"
    native.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    from_preset, _, _ = run_cli(REES46, tmp=tmp_path)
    from_jsonl, summary, _ = run_cli(native, "--format", "auto", tmp=tmp_path)
    assert from_jsonl == from_preset
    assert summary["events_read"] == 8721


def test_format_auto_by_content_and_explicit_override(tmp_path: Path) -> None:
    renamed = tmp_path / "clicks.dat"
    renamed.write_bytes(REES46.read_bytes())
    triggers, _, _ = run_cli(renamed, tmp=tmp_path)
    assert len(triggers) == 425
    # an OTTO file read as native JSONL: every line lacks user_id (exit 2: nothing taken)
    _, summary, _ = run_cli(OTTO, "--format", "jsonl", tmp=tmp_path, returncode=2)
    assert summary["rejected"] == {"missing_field": 20}
    assert summary["triggers"] == {"repeat_view_no_purchase": 0, "cart_abandonment": 0,
                                   "promo_arrival": 0}


@pytest.mark.parametrize(
    ("first", "name", "fmt"),
    [
        (REES46.read_bytes().splitlines()[0], None, "rees46"),
        (b"\xef\xbb\xbf" + REES46.read_bytes().splitlines()[0], None, "rees46"),
        (b"anything", "x.csv", "rees46"),
        (OTTO.read_bytes().splitlines()[0], None, "otto"),
        (b'{"user_id": "u", "ts": 1, "type": "view"}', "x.jsonl", "jsonl"),
        (b'{"truncated', None, "jsonl"),
        (b"", None, "jsonl"),
    ],
)
def test_detect_format(first: bytes, name: str | None, fmt: str) -> None:
    assert detect_format(first, name) == fmt


def test_triggers_go_to_stdout_without_the_summary(tmp_path: Path) -> None:
    done = subprocess.run([str(CLI), "replay", str(OTTO), "--no-progress"],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 79
    assert all(set(orjson.loads(line)) >= {"scene", "user_id", "key", "ts"} for line in lines)
    assert b"events read" in done.stderr


def test_missing_input_file_is_a_clean_error(tmp_path: Path) -> None:
    done = subprocess.run([str(CLI), "replay", str(tmp_path / "nope.jsonl")],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 1
    assert b"cannot read" in done.stderr
    assert b"Traceback" not in done.stderr


def test_a_file_of_which_every_line_is_rejected_fails_with_a_hint(tmp_path: Path) -> None:
    users = tmp_path / "users.csv"  # a CSV, but not a clickstream
    users.write_text("user_id,email\nann,ann@example.com\n")
    done = subprocess.run([str(CLI), "replay", str(users), "--no-progress"],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "every line of" in err and "rejected as rees46 (2 wrong_type)" in err
    assert "Traceback" not in err
    good = subprocess.run([str(CLI), "replay", str(OTTO), "--no-progress"],
                          capture_output=True, timeout=60, check=False)
    assert good.returncode == 0 and b"every line" not in good.stderr
