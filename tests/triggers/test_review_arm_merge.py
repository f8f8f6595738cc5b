"""An identity merge during a config experiment: the timer the anonymous id
armed is re-armed by the known user's arm (its timer scenes), as a restart
(rebuild_timers) and the firing itself (_fire_due) pick it."""

from __future__ import annotations

from typing import Any

from config.loader import validate_config
from triggers.engine import Arm
from triggers.events import Event
from triggers.host import IDENTIFY, EngineHost
from triggers.scenes import Scene

BASE = {"look": {"kind": "repeat", "when": {"type": "view"}, "count": 3, "within": "30m"}}
# Only the candidate has the absence scene.
TRIAL = {**BASE, "left": {"kind": "absence", "start": {"type": "cart"}, "after": "10m"}}


def _scenes(scenes: dict[str, Any]) -> list[Scene]:
    return validate_config({"scenes": scenes}).scene_list()


def ev(user: str, ts: int, etype: str, **fields: object) -> Event:
    return Event(user, ts, etype, {"user_id": user, "ts": ts, "type": etype, **fields})


def test_a_timer_carried_into_a_candidate_user_fires_by_the_candidates_scenes() -> None:
    host = EngineHost(_scenes(BASE))
    in_arm = {"anon", "k"}
    host.engine.reconfigure(host.engine.scenes,
                            arm=Arm(tuple(_scenes(TRIAL)), in_arm.__contains__))
    host.take(ev("anon", 100, "cart"))  # the candidate's absence scene arms
    host.take(ev("anon", 200, IDENTIFY, known_id="k"))
    state = host.engine.store.get("k")
    assert state is not None and state.timer["left"][0] == 600_100
    got = [(t.scene, t.user_id, t.ts) for t in host.advance(700_000)]
    assert got == [("left", "k", 600_100)]


def test_a_timer_of_the_base_arm_is_not_armed_for_a_candidate_user() -> None:
    base = {**BASE, "gone": {"kind": "absence", "start": {"type": "cart"}, "after": "10m"}}
    host = EngineHost(_scenes(base))
    host.engine.reconfigure(host.engine.scenes,
                            arm=Arm(tuple(_scenes(BASE)), {"k"}.__contains__))
    host.take(ev("anon", 100, "cart"))  # a base user: the base's absence scene arms
    host.take(ev("anon", 200, IDENTIFY, known_id="k"))  # k runs the candidate: no "gone"
    assert host.advance(700_000) == []
