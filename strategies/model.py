"""Compiled strategies and their versions.

A strategy's config is compiled once into frozen steps whose jumps are step
indexes. The :class:`Registry` keeps every version that a user may still be
inside: an edit adds a new version for new entrants; users already inside
keep the version they entered with (see docs/strategies.md for the rule
after a restart). A bad edit raises :class:`ConfigError` and changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from config.scene_models import GoalModel
from config.strategy_models import (
    EXIT,
    NEXT,
    StrategyModel,
    parse_strategies,
    step_label,
)
from triggers.errors import ConfigError
from triggers.predicates import Matcher
from triggers.tagcondition import TagCondition

END = -1  # jump target meaning "leave the strategy"


@dataclass(frozen=True, slots=True)
class Case:
    event: str | None
    channel: str | None
    target: int
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    id: str
    kind: str
    channels: tuple[str, ...] = ()
    content: str = ""
    respect_preference: bool = True
    duration_ms: int = 0  # wait, or a branch's window
    cases: tuple[Case, ...] = ()
    otherwise: int = END
    tag_add: tuple[str, ...] = ()
    tag_remove: tuple[str, ...] = ()
    score: int = 0
    enrol: str = ""
    audience_add: str | None = None
    audience_remove: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    scenes: frozenset[str] | None
    tags: TagCondition
    segments: frozenset[str] | None

    def holds(self, tags: frozenset[str], segment: str | None) -> bool:
        if not self.tags.holds(tags):
            return False
        return self.segments is None or segment in self.segments


@dataclass(frozen=True, slots=True)
class Goal:
    """A goal event (compiled predicate) within ``within_ms`` of entering."""

    matches: Matcher
    within_ms: int

    def met(self, fields: Mapping[str, Any], entered_ms: int, ts: int) -> bool:
        return entered_ms < ts <= entered_ms + self.within_ms and self.matches(fields)


def compile_goal(model: GoalModel | None) -> Goal | None:
    """A scene's or strategy's ``goal:`` as the report and the journeys test it."""
    return None if model is None else Goal(model.event.compile(), model.within)


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    version: int
    digest: str
    entry: Entry
    steps: tuple[Step, ...]
    reenter_after_ms: int | None
    control_share: float | None
    goal: Goal | None = None

    def step_by_id(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)


def digest_of(model: StrategyModel) -> str:
    # Without a goal the dump leaves the key out: digests (versions) from
    # before goals existed stay the same.
    exclude = {"goal"} if model.goal is None else None
    return hashlib.sha256(model.model_dump_json(by_alias=True, exclude=exclude)
                          .encode()).hexdigest()[:16]


def compile_strategy(name: str, version: int, model: StrategyModel) -> Strategy:
    ids = {s.id: i for i, s in enumerate(model.steps) if s.id is not None}

    def target(ref: str, index: int) -> int:
        if ref == EXIT:
            return END
        if ref == NEXT:
            return index + 1 if index + 1 < len(model.steps) else END
        return ids[ref]

    steps = []
    for i, s in enumerate(model.steps):
        sid = s.id or f"step{i + 1}"
        kind = s.kind
        if s.send is not None:
            steps.append(Step(i, sid, kind, channels=s.send.channel_list(), content=s.send.content,
                              respect_preference=s.send.respect_preference))
        elif s.wait is not None:
            steps.append(Step(i, sid, kind, duration_ms=s.wait))
        elif s.branch is not None:
            cases = tuple(Case(c.event, c.channel, target(c.goto, i), c.tag)
                          for c in s.branch.when)
            steps.append(Step(i, sid, kind, duration_ms=s.branch.within, cases=cases,
                              otherwise=target(s.branch.otherwise, i)))
        elif s.tag is not None:
            steps.append(Step(i, sid, kind, tag_add=tuple(s.tag.add),
                              tag_remove=tuple(s.tag.remove)))
        elif s.score is not None:
            steps.append(Step(i, sid, kind, score=s.score))
        elif s.enrol is not None:
            steps.append(Step(i, sid, kind, enrol=s.enrol))
        elif s.audience is not None:
            steps.append(Step(i, sid, kind, audience_add=s.audience.add,
                              audience_remove=s.audience.remove))
        else:
            steps.append(Step(i, sid, kind))
    e = model.entry
    tags = e.tags
    entry = Entry(
        scenes=frozenset(e.scene) if e.scene is not None else None,
        tags=tags.condition() if tags else TagCondition(),
        segments=frozenset(e.segment) if e.segment is not None else None,
    )
    return Strategy(name, version, digest_of(model), entry, tuple(steps), model.reenter_after,
                    model.control_share, compile_goal(model.goal))


class Registry:
    """Every live version of every strategy; ``current`` is what new entrants get."""

    def __init__(self, models: Mapping[str, StrategyModel] | None = None,
                 scenes: frozenset[str] | None = None) -> None:
        self._versions: dict[str, dict[int, Strategy]] = {}
        self._current: dict[str, int] = {}
        # A config experiment (config.experiment): what its users enter instead,
        # and the hash that picks them. Both arms' versions live in _versions,
        # so a run finds its version whichever arm entered it.
        self._arm_current: dict[str, int] | None = None
        self._takes: Callable[[str], bool] | None = None
        self.scenes = scenes  # known scene names, to check entries (None: unchecked)
        if models:
            self.apply(models)

    def _currents(self, user_id: str | None) -> dict[str, int]:
        if self._arm_current is not None and user_id is not None and self._takes is not None \
                and self._takes(user_id):
            return self._arm_current
        return self._current

    def current(self, name: str, user_id: str | None = None) -> Strategy | None:
        """What a new entrant gets (``user_id``: that user's experiment arm)."""
        version = self._currents(user_id).get(name)
        return None if version is None else self._versions[name][version]

    def get(self, name: str, version: int) -> Strategy | None:
        return self._versions.get(name, {}).get(version)

    def names(self) -> list[str]:
        return list(self._current)

    def strategies(self, user_id: str | None = None) -> list[Strategy]:
        return [self._versions[n][v] for n, v in self._currents(user_id).items()]

    def apply_arm(self, models: Mapping[str, StrategyModel] | None,
                  takes: Callable[[str], bool] | None = None) -> dict[str, int]:
        """A config experiment's candidate strategies for the users ``takes``
        picks (None: the experiment ended); the base stays current for the
        others. Raises ConfigError and changes nothing when invalid."""
        if models is None or takes is None:
            self._arm_current, self._takes = None, None
            return {}
        self._check(models, set(models))
        arm = {name: self._add(name, model) for name, model in models.items()}
        self._arm_current, self._takes = arm, takes
        return dict(arm)

    def apply(self, models: Mapping[str, StrategyModel]) -> dict[str, int]:
        """Install a full set of strategies (a config load or reload). Changed
        strategies get a new version; unchanged keep theirs; removed ones stop
        taking entrants but their versions stay for users inside. Returns the
        current version of each strategy. Raises ConfigError and changes
        nothing when any strategy is invalid against the others."""
        self._check(models, set(models))
        for name, model in models.items():
            self._install(name, model)
        for name in list(self._current):
            if name not in models:
                del self._current[name]
        return dict(self._current)

    def edit(self, name: str, raw: Any) -> int:
        """Edit one live strategy from its raw config; returns the new version.
        A bad edit raises ConfigError naming strategy, step and field, and the
        old version stays current."""
        try:
            model = parse_strategies({name: raw}, source=f"edit of strategy {name!r}")[name]
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None
        self._check({name: model}, set(self._current) | {name})
        return self._install(name, model)

    def _check(self, models: Mapping[str, StrategyModel], known: set[str]) -> None:
        problems = []
        for name, model in models.items():
            for number, step in enumerate(model.steps, 1):
                if step.enrol is not None and step.enrol not in known:
                    problems.append(f"strategy {name!r}, {step_label(number, step.id)}, "
                                    f"field 'enrol': no strategy named {step.enrol!r}")
            scenes = model.entry.scene or []
            if self.scenes is not None:
                problems += [f"strategy {name!r}, field 'entry.scene': no scene named {s!r}"
                             for s in scenes if s not in self.scenes]
        if problems:
            raise ConfigError(problems)

    def _install(self, name: str, model: StrategyModel) -> int:
        version = self._current[name] = self._add(name, model)
        return version

    def _add(self, name: str, model: StrategyModel) -> int:
        """The version with ``model``'s digest, added when new."""
        versions = self._versions.setdefault(name, {})
        current = self._current.get(name)
        digest = digest_of(model)
        if current is not None and versions[current].digest == digest:
            return current
        same = next((v for v, s in versions.items() if s.digest == digest), None)
        version = same if same is not None else max(versions, default=0) + 1
        if same is None:
            versions[version] = compile_strategy(name, version, model)
        return version
