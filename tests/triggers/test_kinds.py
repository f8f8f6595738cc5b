"""The kind registry: the engine, hot reload and check-config ask a scene's
kind, so a kind registered here runs with no change anywhere else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from config.loader import validate_config
from config.scene_models import SCENE_MODELS, model_kind
from scenetrigger.cli.change.check_config import describe
from triggers.engine import Engine
from triggers.events import Event, Trigger
from triggers.explain import explain_scene, fired_why
from triggers.kinds import KINDS, kind_names, kind_of, spelled_out
from triggers.kinds.base import Limits, Shape, Slot
from triggers.kinds.explaining import Said, SceneExplanation, noun, plain
from triggers.predicates import Fields, Predicate, parse_predicate
from triggers.reshape import resets
from triggers.state import UserState
from triggers.userfilter import UserFilter


def test_every_kind_has_its_config_model_in_registry_order() -> None:
    assert kind_names() == ("repeat", "absence", "arrival", "sequence", "replenishment", "date",
                            "back_in_stock", "price_drop", "new_arrival")
    assert tuple(model_kind(m) for m in SCENE_MODELS) == kind_names()
    assert spelled_out() == ("repeat, absence, arrival, sequence, replenishment, date, "
                             "back_in_stock, price_drop or new_arrival")
    assert [name for name, kind in KINDS.items() if kind.timer] == ["absence", "replenishment",
                                                                    "date"]


@dataclass(frozen=True, slots=True)
class EveryOtherScene:
    """A toy kind: fires on every second matching event of a user."""

    name: str
    when: Predicate
    user: UserFilter | None = None
    kind: str = field(default="every_other", init=False)


class EveryOtherRule:
    __slots__ = ("_when", "name", "timer", "user")

    def __init__(self, scene: EveryOtherScene) -> None:
        self.name, self.timer, self.user = scene.name, False, scene.user
        self._when = scene.when.compile()

    def apply(self, state: UserState, fields: Fields, ts: int, first: bool | None,
              second: bool | None) -> str | Literal[False] | None:
        if not (self._when(fields) if first is None else first):
            return False
        seen = state.fires.setdefault(self.name, {})
        seen[""] = seen.get("", 0) + 1
        return None if seen[""] % 2 == 0 else False

    def prune(self, state: UserState) -> None:
        """Nothing expires."""


class EveryOtherKind:
    name = "every_other"
    timer = False
    slot: Slot = "fires"
    reads_profile = False

    def rule(self, scene: EveryOtherScene, limits: Limits) -> EveryOtherRule:
        return EveryOtherRule(scene)

    def predicates(self, scene: EveryOtherScene) -> tuple[Predicate | None, ...]:
        return (scene.when,)

    def shape(self, scene: EveryOtherScene) -> Shape:
        return Shape(scene.kind)

    def describe(self, scene: EveryOtherScene) -> str:
        return "every other matching event"

    def explain(self, scene: EveryOtherScene, events: Sequence[Event], fires: list[Trigger],
                clock_ms: int | None, said: Said) -> SceneExplanation:
        return plain(scene, fires)

    def why(self, scene: EveryOtherScene, trigger: Trigger, state: UserState | None) -> str:
        return f"the second {noun(scene.when, False)}"


@pytest.fixture
def every_other() -> Any:
    KINDS["every_other"] = EveryOtherKind()
    yield
    del KINDS["every_other"]


def test_a_registered_kind_runs_in_the_engine_reload_and_check_config(every_other: Any) -> None:
    scene = EveryOtherScene("eo", parse_predicate({"type": "view"}))
    engine = Engine([scene])
    views = [Event("u", ts, "view", {"user_id": "u", "ts": ts, "type": "view"})
             for ts in (1, 2, 3, 4)]
    page = Event("u", 5, "page", {"user_id": "u", "ts": 5, "type": "page"})
    assert [engine.handle(e) for e in [*views, page]] == [
        [], [Trigger("eo", "u", None, 2)], [], [Trigger("eo", "u", None, 4)], []]
    assert kind_of(scene).name == "every_other" and describe(scene) == \
        "every other matching event"
    assert resets([scene], []) and not resets([scene], [scene])
    fired = [Trigger("eo", "u", None, 2), Trigger("eo", "u", None, 4)]
    told = explain_scene(scene, views, fired, 5)
    assert [(f.trigger.ts, f.why) for f in told.fired] == [(2, "every_other fired"),
                                                          (4, "every_other fired")]
    assert fired_why(scene, fired[0]) == "the second view"
    assert explain_scene(scene, views[:1], [], 1).missing == \
        "did not fire (no explanation for kind 'every_other' yet)"


def test_an_unregistered_kind_is_refused_by_name() -> None:
    scene = EveryOtherScene("eo", parse_predicate({}))
    with pytest.raises(ValueError, match="scene 'eo' has an unknown kind 'every_other'"):
        Engine([scene])


def test_check_config_describes_each_kind_with_its_qualifiers() -> None:
    scenes = validate_config({"scenes": {
        "r": {"kind": "repeat", "when": {"type": "view"}, "count": 3, "within": "1h",
              "per": "product_id", "unless": {"type": "cart"}, "cooldown": "1d"},
        "r0": {"kind": "repeat", "when": {"type": "view"}, "count": 2, "within": "30m"},
        "a": {"kind": "arrival", "when": {"type": "view"}, "per": "page", "cooldown": "1h"},
        "a0": {"kind": "arrival", "when": {"type": "view"}},
    }}).scene_list()
    assert {s.name: describe(s) for s in scenes} == {
        "r": "repeat  3x within 1h per product_id unless ..., cooldown 1d",
        "r0": "repeat  2x within 30m",
        "a": "arrival per page, cooldown 1h",
        "a0": "arrival",
    }
