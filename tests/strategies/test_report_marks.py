"""``scenetrigger report`` over a synthetic replay with known groups, opens,
clicks and conversions. The expected figures are counted here from the
lists the stream is built from, not by the report's code.

* the replay lines carry the pipeline's marks (control users marked, the
  others delivered), chosen by a rule unrelated to the hash: the report must
  use them and warn that ``--control-share`` disagrees;
* the same stream without marks falls back to the hash (recomputed here);
* feedback events are what the feedback routes emit (channels.feedback.events), so
  the vocabulary is checked end to end.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from channels.feedback.events import MessageMeta
from channels.pipeline import message_id_for
from scenetrigger.cli.main import main
from triggers.events import Trigger

SCENE = "cart_abandonment"
T0 = 1_569_888_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
USERS = [f"u{i:03d}" for i in range(240)]
CONTROL = {u for i, u in enumerate(USERS) if i % 4 == 0}  # 60 marked control users
OPENERS = {u for i, u in enumerate(USERS) if u not in CONTROL and i % 3 == 0}
CLICKERS = {u for i, u in enumerate(USERS) if u in OPENERS and i % 2 == 0}
BUYERS = {u for i, u in enumerate(USERS) if i % 5 == 0 or (u in OPENERS and i % 7 == 1)}
LATE_BUYERS = {u for i, u in enumerate(USERS) if i % 11 == 3}  # outside the 24h window


def _hash_control(user: str, share: float) -> bool:
    digest = hashlib.blake2b(f"scenetrigger\x1f{SCENE}\x1f{user}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def _trigger_line(i: int, user: str, marked: bool) -> dict[str, Any]:
    line: dict[str, Any] = {"scene": SCENE, "user_id": user, "key": f"p{i}", "ts": T0 + i}
    if not marked:
        return line
    if user in CONTROL:
        return line | {"delivery": "suppressed", "reason": "control", "channel": None,
                       "variant": "v", "group": "control"}
    return line | {"delivery": "delivered", "channel": "inbox", "variant": "v"}


def _events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, user in enumerate(USERS):
        ts = T0 + i
        out.append({"user_id": user, "ts": ts, "type": "cart", "product_id": f"p{i}"})
        mid = message_id_for(Trigger(SCENE, user, f"p{i}", ts).trigger_id, "inbox")
        meta = MessageMeta(user, SCENE, "inbox")
        if user in OPENERS:
            out.append(meta.event("opened", mid, ts + HOUR).to_dict())
            out.append(meta.event("opened", mid, ts + HOUR + 5).to_dict())  # counted once
        if user in CLICKERS:
            out.append(meta.event("clicked", mid, ts + 2 * HOUR).to_dict())
        if user in BUYERS:
            out.append({"user_id": user, "ts": ts + 3 * HOUR, "type": "purchase",
                        "product_id": f"p{i}", "price": 10})
        if user in LATE_BUYERS:
            out.append({"user_id": user, "ts": ts + 2 * DAY, "type": "purchase",
                        "product_id": f"p{i}", "price": 99})
    return sorted(out, key=lambda e: int(e["ts"]))


def _write(tmp: Path, marked: bool) -> tuple[Path, Path]:
    triggers, events = tmp / f"triggers-{marked}.jsonl", tmp / "events.jsonl"
    triggers.write_bytes(b"".join(orjson.dumps(_trigger_line(i, u, marked)) + b"\n"
                                  for i, u in enumerate(USERS)))
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _events()))
    return triggers, events


def _scene_row(tmp: Path, triggers: Path, events: Path, share: str) -> dict[str, Any]:
    out = tmp / f"report-{triggers.stem}-{share}.json"
    assert main(["report", str(triggers), str(events), "--control-share", share,
                 "--json", str(out)]) == 0
    data = orjson.loads(out.read_bytes())
    # the config's other scenes never fire here: their rows are zeros
    (row,) = [r for r in data["rows"] if r["kind"] == "scene" and r["triggered"]]
    out_row: dict[str, Any] = row | {"scene_groups": data["scene_groups"]}
    return out_row


def test_marks_decide_groups_and_feedback_fills_the_funnel(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    triggers, events = _write(tmp_path, marked=True)
    row = _scene_row(tmp_path, triggers, events, "0.5")
    treated = [u for u in USERS if u not in CONTROL]
    assert (row["treated"], row["control"]) == (len(treated), len(CONTROL)) == (180, 60)
    assert row["suppressed"] == {"control": len(CONTROL)}
    assert (row["sent"], row["delivered"]) == (len(treated), len(treated))
    assert (row["opened"], row["clicked"], row["shared"]) == (len(OPENERS), len(CLICKERS), 0)
    conv_t = len(BUYERS & set(treated))
    conv_c = len(BUYERS & CONTROL)
    assert (row["converted_treated"], row["converted_control"]) == (conv_t, conv_c)
    assert row["revenue"] == 10 * len(BUYERS)
    assert row["uplift"] == pytest.approx(conv_t / len(treated) - conv_c / len(CONTROL))
    low, high = row["uplift_ci95"]
    assert low < row["uplift"] < high
    # The hash under share 0.5 would have drawn other groups: the report says so.
    differ = sum(_hash_control(u, 0.5) != (u in CONTROL) for u in USERS)
    assert differ > 0 and row["scene_groups"] == {"marked": len(USERS), "hashed": 0,
                                                  "mark_disagreements": differ}
    err = capsys.readouterr().err
    assert f"{differ} of {len(USERS)} marked trigger lines" in err
    assert "--control-share 0.5" in err


def test_marks_that_agree_with_the_share_raise_no_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    triggers = tmp_path / "agree.jsonl"
    lines = []
    for i, user in enumerate(USERS):
        line: dict[str, Any] = {"scene": SCENE, "user_id": user, "key": f"p{i}", "ts": T0 + i,
                                "delivery": "delivered", "channel": "inbox", "variant": "v"}
        if _hash_control(user, 0.3):
            line |= {"delivery": "suppressed", "reason": "control", "channel": None,
                     "group": "control"}
        lines.append(orjson.dumps(line) + b"\n")
    triggers.write_bytes(b"".join(lines))
    _, events = _write(tmp_path, marked=True)
    row = _scene_row(tmp_path, triggers, events, "0.3")
    expected = sum(_hash_control(u, 0.3) for u in USERS)
    assert row["control"] == expected and row["scene_groups"]["mark_disagreements"] == 0
    assert "warning" not in capsys.readouterr().err


def test_without_marks_the_hash_decides(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    triggers, events = _write(tmp_path, marked=False)
    row = _scene_row(tmp_path, triggers, events, "0.5")
    control = {u for u in USERS if _hash_control(u, 0.5)}
    assert (row["treated"], row["control"]) == (len(USERS) - len(control), len(control))
    assert row["converted_control"] == len(BUYERS & control)
    assert row["converted_treated"] == len(BUYERS - control)
    # No message ids were registered (no delivery), so feedback falls back to
    # the user's latest unit of the named scene: opens still count once each.
    assert (row["opened"], row["clicked"]) == (len(OPENERS), len(CLICKERS))
    assert row["scene_groups"] == {"marked": 0, "hashed": len(USERS), "mark_disagreements": 0}
    assert "warning" not in capsys.readouterr().err
