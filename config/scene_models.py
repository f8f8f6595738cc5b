"""Pydantic models of the ``scenes`` section (the contract of SEMANTICS.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from triggers.durations import parse_duration_ms
from triggers.predicates import Predicate, parse_predicate
from triggers.scenes import AbsenceScene, ArrivalScene, Limits, RepeatScene, Scene


def _duration(value: Any) -> int:
    return parse_duration_ms(value)


def _predicate(value: Any) -> Predicate:
    if isinstance(value, Predicate):
        return value
    return parse_predicate(value)


Duration = Annotated[int, BeforeValidator(_duration)]
PredicateField = Annotated[
    Predicate,
    BeforeValidator(_predicate),
    PlainSerializer(lambda p: {n: repr(c) for n, c in p.conditions}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class RepeatModel(_Strict):
    kind: Literal["repeat"]
    when: PredicateField
    count: int = Field(ge=1, strict=True)
    within: Duration = Field(gt=0)
    per: str | None = Field(default=None, min_length=1)
    unless: PredicateField | None = None
    cooldown: Duration | None = None

    def to_scene(self, name: str) -> RepeatScene:
        return RepeatScene(name, self.when, self.count, self.within, self.per, self.unless,
                           self.cooldown)


class AbsenceModel(_Strict):
    kind: Literal["absence"]
    start: PredicateField
    after: Duration
    cancel: PredicateField | None = None

    def to_scene(self, name: str) -> AbsenceScene:
        return AbsenceScene(name, self.start, self.after, self.cancel)


class ArrivalModel(_Strict):
    kind: Literal["arrival"]
    when: PredicateField
    per: str | None = Field(default=None, min_length=1)
    cooldown: Duration | None = None

    def to_scene(self, name: str) -> ArrivalScene:
        return ArrivalScene(name, self.when, self.per, self.cooldown)


SceneModel = Annotated[RepeatModel | AbsenceModel | ArrivalModel, Field(discriminator="kind")]


class EngineModel(_Strict):
    """Engine bounds (see :class:`triggers.scenes.Limits`)."""

    late_events: Duration = 300_000
    max_window_entries: int = Field(default=64, ge=1, le=100_000, strict=True)
    max_keys_per_scene: int = Field(default=256, ge=1, le=1_000_000, strict=True)
    max_line_bytes: int = Field(default=1 << 20, ge=64, strict=True)

    def limits(self) -> Limits:
        return Limits(self.late_events, self.max_window_entries, self.max_keys_per_scene)


def build_scenes(models: dict[str, Any]) -> list[Scene]:
    return [model.to_scene(name) for name, model in models.items()]
