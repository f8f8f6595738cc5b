"""Control groups in delivery: scene holdout users get no message, the
triggers themselves never change, and `report` sees the same groups.

The control membership is recomputed here with hashlib directly (not with
strategies.control), so a change of the hash in the code would fail."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml

from channels.assembly import DryRunSender, build_pipeline
from config.loader import load_config_text
from tests.paths import REES46_SAMPLE
from triggers.events import Trigger

REES46 = REES46_SAMPLE
CLI = Path(sys.executable).with_name("scenetrigger")
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
SALT = "control-test"
SHARE = 0.3
PER = {"cart_abandonment": 0.5}


def independent_control(scene: str, user: str, share: float, salt: str = SALT) -> bool:
    digest = hashlib.blake2b(f"{salt}\x1f{scene}\x1f{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64 < share


def share_of(scene: str) -> float:
    return PER.get(scene, SHARE)


def config_with_control(tmp: Path) -> Path:
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["strategies"] = {"control": {"share": SHARE, "per": PER, "salt": SALT}}
    path = tmp / "control.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def replay(tmp: Path, name: str, *args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out, summary = tmp / f"{name}.jsonl", tmp / f"{name}.summary.json"
    done = subprocess.run(
        [str(CLI), "replay", str(REES46), "--out", str(out), "--summary-json", str(summary),
         "--no-progress", *args], capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode()
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    return records, orjson.loads(summary.read_bytes())


def test_rees46_control_users_get_no_message_and_triggers_do_not_change(tmp_path: Path) -> None:
    config = config_with_control(tmp_path)
    plain, _ = replay(tmp_path, "plain", "--config", str(config))
    delivered, summary = replay(tmp_path, "deliver", "--config", str(config),
                                "--deliver", "dry-run")

    contract = ("scene", "user_id", "key", "ts")
    assert [tuple(r[k] for k in contract) for r in delivered] == \
        [tuple(r[k] for k in contract) for r in plain]
    assert len(plain) == 425  # docs/content.md: the rees46 sample fires 425 triggers

    expected = {i for i, r in enumerate(delivered)
                if independent_control(r["scene"], r["user_id"], share_of(r["scene"]))}
    marked = {i for i, r in enumerate(delivered) if r.get("reason") == "control"}
    assert marked == expected
    for i in marked:
        record = delivered[i]
        assert record["delivery"] == "suppressed" and record["group"] == "control"
        assert record["channel"] is None and "subject" not in record
    assert all("group" not in r for i, r in enumerate(delivered) if i not in marked)
    # Treated users still get their messages.
    assert Counter(r["delivery"] for i, r in enumerate(delivered) if i not in marked)[
        "delivered"] > 0.8 * (len(delivered) - len(marked))

    # The share drawn is the configured one, within 4 binomial standard deviations.
    for scene, count in Counter(r["scene"] for r in delivered).items():
        if count < 20:
            continue
        got = sum(1 for i in marked if delivered[i]["scene"] == scene)
        share = share_of(scene)
        assert abs(got / count - share) <= 4 * (share * (1 - share) / count) ** 0.5 + 1e-9

    assert summary["delivery"]["suppressed"].get("control", 0) == len(marked)

    # `report` over this output sees the same control units per scene.
    done = subprocess.run(
        [str(CLI), "report", str(tmp_path / "deliver.jsonl"), str(REES46), "--config",
         str(config), "--json", "-"], capture_output=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode()
    report = orjson.loads(done.stdout[done.stdout.index(b"{"):])
    control_rows = Counter[str]()
    suppressed_control = Counter[str]()
    for row in report["rows"]:
        if row["kind"] == "scene":
            control_rows[row["name"]] += row["control"]
            suppressed_control[row["name"]] += row["suppressed"].get("control", 0)
    by_scene = Counter(delivered[i]["scene"] for i in marked)
    assert +control_rows == +by_scene == +suppressed_control


async def test_control_user_is_not_claimed_and_counted_by_reason() -> None:
    config = load_config_text(f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery: {{quiet_hours: {{enabled: false}}}}
strategies: {{control: {{share: 0.5, salt: {SALT}}}}}
""")
    sender = DryRunSender()
    pipeline = build_pipeline(config, "dry-run", sender, env={})
    users = [f"u{i}" for i in range(200)]
    outcomes = [await pipeline.deliver(Trigger("promo_arrival", u, "/promo/x", 1_000), None,
                                       1_000) for u in users]
    control = [u for u in users if independent_control("promo_arrival", u, 0.5)]
    assert [o.user_id for o in outcomes if o.reason == "control"] == control
    assert 0 < len(control) < len(users)
    assert {m.user_id for m in sender.messages} == set(users) - set(control)
    assert pipeline.summary()["suppressed"] == {"control": len(control)}
    # A held-out trigger claimed nothing: with control off, the same trigger id is sent.
    config_off = config.model_copy(update={"strategies": config.strategies.model_copy(
        update={"control": config.strategies.control.model_copy(update={"share": 0.0})})})
    again = build_pipeline(config_off, "dry-run", sender, env={})
    again.policy = pipeline.policy
    again_outcome = await again.deliver(Trigger("promo_arrival", control[0], "/promo/x", 1_000),
                                        None, 1_000)
    assert again_outcome.status == "delivered"
