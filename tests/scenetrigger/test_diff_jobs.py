"""`diff --jobs N`: the comparison (--json and the tables) is byte-equal to
`--jobs 1` on both samples and on a persona stream with identify events
(merged users); a side that fails fails the command with its error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from config.loader import DEFAULT_CONFIG_PATH
from tests.paths import DATA
from tests.scenetrigger.test_diff import TUNED
from tests.scenetrigger.test_replay_jobs import identified_stream

CLI = Path(sys.executable).with_name("scenetrigger")


def diff(events: Path, tuned: Path, jobs: int, *extra: str) -> bytes:
    done = subprocess.run(
        [str(CLI), "diff", str(DEFAULT_CONFIG_PATH), str(tuned), str(events), "--jobs", str(jobs),
         "--no-progress", *extra], capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def assert_jobs_agree(events: Path, tmp: Path) -> bytes:
    tuned = tmp / "tuned.yaml"
    tuned.write_text(TUNED)
    one = diff(events, tuned, 1, "--json")
    assert orjson.loads(one)["events"]["read"] > 0
    for jobs in (2, 3):
        assert diff(events, tuned, jobs, "--json") == one
    text = diff(events, tuned, 1)
    assert text.startswith(b"scene")
    assert diff(events, tuned, 2) == text
    return one


@pytest.mark.parametrize("sample", ["rees46-2019-10-01-sample.csv", "otto-sample.jsonl"])
def test_jobs_give_the_same_comparison_on_the_samples(sample: str, tmp_path: Path) -> None:
    assert_jobs_agree(DATA / sample, tmp_path)


def test_jobs_give_the_same_comparison_with_identify_merges(tmp_path: Path) -> None:
    events = identified_stream(11)
    path = tmp_path / "identify.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    result = orjson.loads(assert_jobs_agree(path, tmp_path))
    assert result["events"]["users"]["base"] < len({e["user_id"] for e in events})  # merged
    assert any(row["added"] or row["removed"] for row in result["scenes"].values())


def test_a_side_that_fails_fails_the_command_with_its_error(tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(TUNED)
    missing = tmp_path / "no-catalog.csv"
    done = subprocess.run(
        [str(CLI), "diff", str(DEFAULT_CONFIG_PATH), str(tuned), str(DATA / "otto-sample.jsonl"),
         "--jobs", "2", "--catalog", str(missing), "--no-progress"],
        capture_output=True, timeout=300, check=False)
    assert done.returncode != 0
    assert done.stdout == b""
    assert f"cannot read {missing}".encode() in done.stderr
