"""``scenetrigger explain`` on a replay of the rees46 sample: every trigger
and every suppression names its deciding rule with figures; a capped user, a
quiet-hours-held one and a control-group one each get theirs; the decisions
are the ones ``replay --deliver dry-run --decisions`` writes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from channels.feedback.decisions import read_decision_file
from config.loader import load_config_text
from scenetrigger.ops.explain import Timeline, explain_replay
from scenetrigger.runtime.sources import read_events
from tests.paths import REES46_SAMPLE
from tests.services import REPO

SALT = "explain-test"
CONFIG = f"""
scenes:
  repeat_view_no_purchase: {{kind: repeat, when: {{type: view}}, per: product_id, count: 3,
                            within: 30m, unless: {{type: purchase}}, cooldown: 24h}}
  cart_abandonment: {{kind: absence, start: {{type: cart}}, cancel: {{type: purchase}},
                     after: 30m}}
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page, cooldown: 1h}}
delivery:
  default_timezone: Asia/Shanghai
  caps: {{per_day: 2, per_week: 10}}
  quiet_hours: {{start: "10:00", end: "22:00"}}
strategies: {{control: {{share: 0.2, salt: {SALT}}}}}
"""
# The sample runs 00:00-02:35 UTC = 08:00-10:35 in Shanghai: triggers after
# 10:00 there are held by the quiet hours.


def _config_file(tmp: Path) -> Path:
    path = tmp / "explain.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def timelines() -> dict[str, Timeline]:
    config = load_config_text(CONFIG)
    with REES46_SAMPLE.open("rb") as fh:
        users = {str(e.user_id) for _, e in read_events(fh, "rees46")
                 if hasattr(e, "user_id")}
    with REES46_SAMPLE.open("rb") as fh:
        return explain_replay(read_events(fh, "rees46", config.engine.max_line_bytes,
                                          config.id_limits()), config, users)


def test_every_trigger_and_suppression_names_its_rule(timelines: dict[str, Timeline],
                                                      tmp_path: Path) -> None:
    triggers = decisions = 0
    rules: set[str] = set()
    for timeline in timelines.values():
        why = {f.trigger.trigger_id: f.why for s in timeline.scenes for f in s.fired}
        for trig in timeline.triggers:
            triggers += 1
            assert why[trig.trigger_id], trig  # the scene rule with its figures
            decided = timeline.decisions_for(trig.trigger_id)
            assert decided, f"no decision for {trig}"
        for d in timeline.decisions:
            decisions += 1
            assert d.figures, d
            if d.outcome in ("suppressed", "deferred"):
                assert d.rule is not None, d
                rules.add(d.rule)
    assert triggers == 425 and decisions == 425
    assert rules == {"cap_day", "quiet_hours", "control"}
    # the same decisions as the replay command writes to its decision log
    log = tmp_path / "decisions.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "scenetrigger.cli.main", "replay", str(REES46_SAMPLE), "--config",
         str(_config_file(tmp_path)), "--deliver", "dry-run", "--decisions", str(log),
         "--out", str(tmp_path / "out.jsonl"), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    replayed = sorted(r.encode() for r in read_decision_file(log))
    explained = sorted(d.encode() for t in timelines.values() for d in t.decisions)
    assert explained == replayed


def _first(timelines: dict[str, Timeline], rule: str) -> tuple[Timeline, Any]:
    for user in sorted(timelines):
        for d in timelines[user].decisions:
            if d.rule == rule:
                return timelines[user], d
    raise AssertionError(f"no {rule} decision in the sample")


def test_a_capped_user_is_told_the_cap_and_its_count(timelines: dict[str, Timeline]) -> None:
    timeline, capped = _first(timelines, "cap_day")
    assert capped.text() == "cap_day: 2 of 2 sent today (Asia/Shanghai)"
    sent_before = [d for d in timeline.decisions
                   if d.outcome == "delivered" and d.ts <= capped.ts]
    assert len(sent_before) == 2  # the two that filled the cap, the same local day
    assert "cap_day: 2 of 2 sent today (Asia/Shanghai)" in timeline.render()


def test_a_quiet_hours_user_is_told_until_when(timelines: dict[str, Timeline]) -> None:
    timeline, held = _first(timelines, "quiet_hours")
    assert held.text() == "quiet_hours: until 22:00 Asia/Shanghai"
    assert held.outcome == "deferred" and held.due_ms is not None
    assert held.due_ms == 1_569_938_400_000  # 2019-10-01 22:00 in Shanghai
    assert held.ts >= 1_569_895_200_000  # decided at or after 10:00 there
    assert "deferred, variant generic - quiet_hours: until 22:00 Asia/Shanghai" in \
        timeline.render()


def test_a_control_user_is_told_the_holdout_and_their_bucket(
        timelines: dict[str, Timeline]) -> None:
    timeline, held = _first(timelines, "control")
    digest = hashlib.blake2b(f"{SALT}\x1f{held.scene}\x1f{timeline.user_id}".encode(),
                             digest_size=8).digest()
    place = int.from_bytes(digest, "big") / float(1 << 64)
    assert place < 0.2
    assert held.text() == (f"control: user's bucket {place:.3f} < share 0.2 held out of "
                           f"{held.scene}")


def test_explain_cli_json_and_replay_explain_agree(timelines: dict[str, Timeline],
                                                   tmp_path: Path) -> None:
    timeline, capped = _first(timelines, "cap_day")
    config = str(_config_file(tmp_path))
    base = [sys.executable, "-m", "scenetrigger.cli.main"]
    explain = subprocess.run(
        [*base, "explain", timeline.user_id, "--events", str(REES46_SAMPLE), "--config",
         config, "--json"], cwd=REPO, capture_output=True, timeout=120, check=False)
    assert explain.returncode == 0, explain.stderr
    data = orjson.loads(explain.stdout)
    assert data == orjson.loads(orjson.dumps(timeline.to_dict()))
    texts = [d["text"] for t in data["triggers"] for d in t["decisions"]]
    assert capped.text() in texts
    replay = subprocess.run(
        [*base, "replay", str(REES46_SAMPLE), "--config", config, "--explain",
         timeline.user_id], cwd=REPO, capture_output=True, text=True, timeout=120,
        check=False)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == timeline.render() + "\n"
    assert "repeat_view_no_purchase" in replay.stdout


def test_explain_needs_a_source() -> None:
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "explain", "u"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "--events FILE" in done.stderr


def test_an_unknown_user_is_told_nothing_is_recorded() -> None:
    config = load_config_text(CONFIG)
    with REES46_SAMPLE.open("rb") as fh:
        timelines = explain_replay(read_events(fh, "rees46"), config, {"51384O435"})
    text = timelines["51384O435"].render()  # a letter O for a zero
    assert "nothing is recorded for user '51384O435': is the id right?" in text
    some = next(iter(_known(config).values())).render()
    assert "nothing is recorded" not in some


def _known(config: Any) -> dict[str, Timeline]:
    with REES46_SAMPLE.open("rb") as fh:
        return explain_replay(read_events(fh, "rees46"), config, {"513840435"})


def test_a_user_filter_refusal_is_told_in_the_engines_words() -> None:
    # The engine reports the refusal (the filter and what the profile had):
    # explain prints that, not a reason guessed from the events.
    from triggers.events import Event

    config = load_config_text("""
scenes:
  picky: {kind: arrival, when: {type: cart}, user: {segment: {in: [champion]}}}
  waits: {kind: absence, start: {type: cart}, after: 30m, user: {segment: {in: [champion]}}}
""")
    carts = [(1, Event("u", 1_569_888_000_000, "cart",
                       {"user_id": "u", "ts": 1_569_888_000_000, "type": "cart"})),
             (2, Event("u", 1_569_898_000_000, "view",
                       {"user_id": "u", "ts": 1_569_898_000_000, "type": "view"}))]
    timeline = explain_replay(carts, config, {"u"})["u"]
    whys = {s.scene: [r.why for r in s.refused] for s in timeline.scenes}
    said = "user filter segments {champion}; the profile had segment:new_or_lapsed"
    assert whys == {"picky": [said], "waits": [said]}
    assert f"2019-10-01 00:00:00  refused  picky: {said}" in timeline.render()


def test_windows_now_says_held_and_needed_for_repeat_and_sequence() -> None:
    # Four views within the window of a count-3 repeat (it fired at the third
    # and, with no cooldown, at the fourth): the window holds 4 and needs 3,
    # said so, not "4 of 3". A sequence's
    # `first` times are shown too (they were left out before).
    from triggers.events import Event

    config = load_config_text("""
scenes:
  looks: {kind: repeat, when: {type: view}, count: 3, within: 30m}
  then_cart: {kind: sequence, first: {type: view}, then: {type: cart}, within: 1h}
""")
    t0 = 1_569_888_000_000
    views = [(i, Event("u", t0 + i * 60_000, "view",
                       {"user_id": "u", "ts": t0 + i * 60_000, "type": "view"}))
             for i in range(4)]
    timeline = explain_replay(views, config, {"u"})["u"]
    assert timeline.windows == [
        "looks: 4 within 30m still in the window (3 needed), last fired 2019-10-01 00:03:00",
        "then_cart: 4 `first` within 1h still in the window, waiting for `then`"]


def test_an_unreadable_erasure_receipt_is_said_so_not_a_date_in_the_far_future() -> None:
    """channels.erasure_receipts gives an unreadable receipt a time past every
    record's (1 << 62, so nothing is shown); explain says the time is unknown."""
    from channels.erasure_receipts import UNREADABLE

    unreadable = Timeline("ann", erased_ms=UNREADABLE)
    assert "its receipt is unreadable" in unreadable.render()
    assert str(UNREADABLE) not in unreadable.render()
    assert unreadable.to_dict()["erased_at"] is None
    known = Timeline("ann", erased_ms=1_700_000_000_000)
    assert "erased at 2023-11-14" in known.render()
    assert known.to_dict()["erased_at"] == 1_700_000_000_000
    assert "erased_at" not in Timeline("ann").to_dict()
