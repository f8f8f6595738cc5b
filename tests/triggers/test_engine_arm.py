"""A config experiment's arm in the engine (issue 24.6): the candidate's
scenes run for the users the arm takes, the base's for the others, a timer
follows its user's arm, and each user's state is reshaped from the scenes
they ran to the ones they run (start, promote, rollback)."""

from __future__ import annotations

from typing import Any

from config.loader import validate_config
from tests.triggers.helpers import engine, ev, feed
from triggers.engine import Arm

BASE = {"look": {"kind": "repeat", "when": {"type": "view"}, "count": 3, "within": "30m"}}
TRIAL = {"look": {"kind": "repeat", "when": {"type": "view"}, "count": 2, "within": "30m"},
         "left": {"kind": "absence", "start": {"type": "cart"}, "after": "10m"}}
WIDER = {"look": {"kind": "repeat", "when": {"type": {"in": ["view", "cart"]}}, "count": 2,
                  "within": "30m"}}


def _arm(scenes: dict[str, Any], users: set[str]) -> Arm:
    return Arm(tuple(validate_config({"scenes": scenes}).scene_list()), users.__contains__)


def test_each_user_runs_one_arms_scenes_and_timers_follow_the_arm() -> None:
    eng = engine(BASE)
    eng.reconfigure(eng.scenes, arm=_arm(TRIAL, {"c"}))
    got = feed(eng, [ev("b", 1), ev("c", 2), ev("b", 3), ev("c", 4),
                     ev("b", 5, "cart"), ev("c", 6, "cart"), ev("b", 7)])
    assert got[3] == [("look", "c", None, 4)]  # the candidate: two views
    assert got[6] == [("look", "b", None, 7)]  # the base: three
    # only the candidate has the absence scene: c's timer fires, b has none
    assert [(t.scene, t.user_id) for t in eng.advance(6 + 600_001)] == [("left", "c")]
    assert eng.in_arm("c") and not eng.in_arm("b")
    eng.rebuild_timers()  # a restart: the arm's timer scenes only for its users
    assert eng.pending_timers() == []


def test_state_is_reshaped_per_user_from_the_scenes_they_ran() -> None:
    eng = engine(BASE)
    feed(eng, [ev("b", 1), ev("c", 2)])
    # start: c's "look" window changes shape (its when widens), b's stays
    eng.reconfigure(eng.scenes, arm=_arm(WIDER, {"c"}))
    assert feed(eng, [ev("c", 3)]) == [[]]  # c's old view went with the reshape
    assert feed(eng, [ev("c", 4, "cart")]) == [[("look", "c", None, 4)]]
    # promote: WIDER for everyone; c keeps its window, b's is reshaped
    eng.reconfigure(validate_config({"scenes": WIDER}).scene_list())
    assert not eng.in_arm("c")
    assert feed(eng, [ev("b", 5), ev("c", 6)]) == [[], [("look", "c", None, 6)]]
