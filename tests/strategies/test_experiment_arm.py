"""A config experiment's candidate strategies (issue 24.6): its users enter
the candidate's version, the others the base's; a run keeps the version it
entered through the experiment's end, and a promote makes the candidate's
version current for everyone."""

from __future__ import annotations

from typing import Any

from config.strategy_models import StrategyModel
from strategies.actions import SendAction
from strategies.journeys import JourneyEngine
from strategies.model import Registry
from tests.strategies.helpers import HOUR, T0, trigger


def _model(channel: str) -> StrategyModel:
    raw: dict[str, Any] = {"entry": {"scene": "repeat_view_no_purchase"},
                           "steps": [{"id": "hello", "send": {"channel": channel,
                                                              "content": "reactivation_push_1"}},
                                     {"id": "pause", "wait": "1h"},
                                     {"id": "again", "send": {"channel": channel,
                                                              "content": "reactivation_push_2"}}]}
    return StrategyModel.model_validate(raw)


def _sent(actions: list[Any]) -> list[tuple[str, str, int]]:
    return [(a.user_id, a.channel, a.version) for a in actions if isinstance(a, SendAction)]


def test_the_arm_enters_the_candidate_and_runs_keep_their_version() -> None:
    registry = Registry({"j": _model("push")})
    eng = JourneyEngine(registry)
    assert _sent(eng.on_trigger(trigger("old", T0))) == [("old", "push", 1)]
    registry.apply_arm({"j": _model("email")}, {"c", "old"}.__contains__)
    got = eng.on_trigger(trigger("b", T0 + 1)) + eng.on_trigger(trigger("c", T0 + 2))
    assert _sent(got) == [("b", "push", 1), ("c", "email", 2)]
    # promote: the candidate for everyone; every run goes on in its own version
    registry.apply({"j": _model("email")})
    registry.apply_arm(None)
    assert _sent(eng.on_trigger(trigger("d", T0 + 3))) == [("d", "email", 2)]
    later = eng.advance(T0 + 3 + HOUR + 1)
    assert sorted(_sent(later)) == [("b", "push", 1), ("c", "email", 2), ("d", "email", 2),
                                    ("old", "push", 1)]


def test_the_journeys_service_takes_the_candidates_strategies_for_its_users() -> None:
    import yaml

    from config.experiment import ExperimentSpec, RunningExperiment
    from config.loader import load_config_text
    from strategies.service import JourneyService

    def text(channel: str) -> str:
        return yaml.safe_dump({
            "scenes": {"repeat_view_no_purchase": {"kind": "repeat", "when": {"type": "view"},
                                                   "count": 3, "within": "30m"}},
            "strategies": {"journeys": {"j": _model(channel).model_dump(
                by_alias=True, exclude_none=True, exclude_defaults=True)}}})

    async def send(_action: Any) -> None:
        return None

    base, trial = load_config_text(text("push")), load_config_text(text("email"))
    service = JourneyService(base, None, None, send)  # type: ignore[arg-type]
    running = RunningExperiment(2, ExperimentSpec(1, 0.5, HOUR), trial, T0)
    service.reconfigure(base, running)
    users = [f"u{i}" for i in range(20)]
    for i, user in enumerate(users):
        actions = service.engine.on_trigger(trigger(user, T0 + i))
        want = "email" if running.takes(user) else "push"
        assert [a.channel for a in actions if isinstance(a, SendAction)] == [want], user
    assert {running.takes(u) for u in users} == {True, False}
    service.reconfigure(trial)  # promoted: the experiment is over
    promoted = service.registry.current("j", users[0])
    assert promoted is not None and promoted.steps[0].channels == ("email",)
