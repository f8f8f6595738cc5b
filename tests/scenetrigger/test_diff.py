"""``scenetrigger diff`` (what-if) on the rees46 sample: each side equals a
separate ``replay`` run, added - removed = candidate - base, zero rows stay;
``report --by segment,style`` splits the same way and keeps a silent scene."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from config.loader import DEFAULT_CONFIG_PATH
from tests.paths import REES46_SAMPLE

CLI = Path(sys.executable).with_name("scenetrigger")
# count 3 -> 2 (more repeat triggers, and the cooldown moves which ones fire),
# promo_arrival gone, a new scene that fires on every purchase
TUNED = DEFAULT_CONFIG_PATH.read_text().replace("count: 3", "count: 2").split(
    "  promo_arrival:")[0] + "  bought:\n    kind: arrival\n    when: {type: purchase}\n"


def cli(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run([str(CLI), *map(str, args)], capture_output=True, timeout=180,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done


def replay(config: Path, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out, summary = tmp / f"{config.stem}.jsonl", tmp / f"{config.stem}.json"
    cli("replay", REES46_SAMPLE, "--config", config, "--deliver", "dry-run", "--out", out,
        "--summary-json", summary, "--no-progress")
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return orjson.loads(summary.read_bytes()), lines


def test_diff_sides_equal_two_replays_and_the_changes_add_up(tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(TUNED)
    base_summary, base_lines = replay(DEFAULT_CONFIG_PATH, tmp_path)
    cand_summary, cand_lines = replay(tuned, tmp_path)
    result = orjson.loads(cli("diff", DEFAULT_CONFIG_PATH, tuned, REES46_SAMPLE, "--json",
                              "--no-progress").stdout)
    scenes = result["scenes"]
    assert list(scenes) == ["repeat_view_no_purchase", "cart_abandonment", "promo_arrival",
                            "bought"]
    for name, row in scenes.items():
        assert row["base"] == base_summary["triggers"].get(name, 0), name
        assert row["candidate"] == cand_summary["triggers"].get(name, 0), name
        assert row["added"] - row["removed"] == row["candidate"] - row["base"], name
    repeat = scenes["repeat_view_no_purchase"]
    assert repeat["added"] > 0 and repeat["removed"] > 0  # moved, not only more
    assert scenes["promo_arrival"] == {**scenes["promo_arrival"], "base": 0, "candidate": 0,
                                       "added": 0, "removed": 0}  # zero row kept
    assert scenes["bought"]["candidate"] > 0 and scenes["bought"]["base"] == 0

    # the example users really changed: an added trigger is in the candidate's
    # replay and not in the base's
    def ids(lines: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(x["scene"], x["user_id"], x["key"], x["ts"]) for x in lines}
    example = repeat["examples"]["added"][0]
    found = ("repeat_view_no_purchase", example["user_id"], example["key"], example["ts"])
    assert found in ids(cand_lines) and found not in ids(base_lines)
    gained = scenes["bought"]["examples"]["users_gained"]
    assert gained and {x["user_id"] for x in cand_lines if x["scene"] == "bought"} >= set(gained)

    # per segment: each side's outcomes are the replay lines' (every segment kept)
    assert set(result["segment"]) == {"champion", "loyal", "promising", "new_or_lapsed"}
    for side, lines in (("base", base_lines), ("candidate", cand_lines)):
        deferred = Counter(x["segment"] for x in lines if x["delivery"] == "deferred")
        for segment, row in result["segment"].items():
            assert row[side]["deferred"] == deferred.get(segment, 0), (side, segment)
        totals = {split: sum(sum(r[side].values()) for r in result[split].values())
                  for split in ("segment", "style", "variant")}
        assert len(set(totals.values())) == 1, totals
    assert "promo_arrival/promo_hot_list" in result["variant"]  # a zero variant row


def test_diff_prints_a_table_without_json(tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(TUNED)
    out = cli("diff", DEFAULT_CONFIG_PATH, tuned, REES46_SAMPLE, "--no-progress").stdout.decode()
    assert out.splitlines()[0].split() == ["scene", "base", "cand", "added", "removed",
                                           "users+", "users-"]
    assert any(line.startswith("promo_arrival ") for line in out.splitlines())
    assert "e.g. added:" in out and " at 2019-10-01 " in out  # when, as a person reads it
    # variant names are whole, not cut at the column's width
    assert any(line.startswith("repeat_view_no_purchase/zh_category_new ")
               for line in out.splitlines())


def test_report_by_segment_and_style_keeps_silent_scenes(tmp_path: Path) -> None:
    _summary, lines = replay(DEFAULT_CONFIG_PATH, tmp_path)
    report = orjson.loads(cli("report", tmp_path / "scenes.jsonl", REES46_SAMPLE,
                              "--by", "segment,style", "--json", "-").stdout)
    rows = [r for r in report["rows"] if r["kind"] == "scene"]
    promo = [r for r in rows if r["name"] == "promo_arrival"]
    assert len(promo) == 1 and promo[0]["triggered"] == 0  # no triggers: a row of zeros
    split = Counter((x["scene"], x["segment"], x["style"]) for x in lines)
    got = {(r["name"], r["segment"], r["style"]): r["triggered"] for r in rows
           if r["triggered"]}
    assert got == dict(split)
    assert len({r["segment"] for r in rows}) > 1  # really split
    assert b"warning" not in cli("report", tmp_path / "scenes.jsonl", REES46_SAMPLE, "--by",
                                 "segment").stderr
    # lines of a replay without --deliver carry no segment or style: the report says so
    plain = tmp_path / "plain.jsonl"
    cli("replay", REES46_SAMPLE, "--out", plain, "--no-progress")
    warned = cli("report", plain, REES46_SAMPLE, "--by", "segment,style").stderr.decode()
    assert "carries a segment or style (only `replay --deliver" in warned


def test_diff_reads_stored_versions(tmp_path: Path) -> None:
    """``diff current CANDIDATE`` with --config-store: the same as the files."""
    import asyncio

    from config.versions import DirectoryStore, push

    store = tmp_path / "versions"
    asyncio.run(push(DirectoryStore(store), DEFAULT_CONFIG_PATH.read_text(), "start", "ops"))
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(TUNED)
    by_file = orjson.loads(cli("diff", DEFAULT_CONFIG_PATH, tuned, REES46_SAMPLE, "--json",
                               "--no-progress").stdout)
    by_version = orjson.loads(cli("diff", "current", tuned, REES46_SAMPLE, "--json",
                                  "--no-progress", "--config-store", store).stdout)
    assert by_version["scenes"] == by_file["scenes"]
    by_number = orjson.loads(cli("diff", "1", tuned, REES46_SAMPLE, "--json", "--no-progress",
                                 "--config-store", store).stdout)  # as `config show 1`
    assert by_number["scenes"] == by_file["scenes"]
    done = subprocess.run([str(CLI), "diff", "v9", tuned, REES46_SAMPLE, "--config-store",
                           str(store)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 1 and b"no config version v9" in done.stderr
