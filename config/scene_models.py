"""Pydantic models of the ``scenes`` section (the contract of SEMANTICS.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from config.base import Duration, StrictModel, TagConditionModel
from config.content_models import Segment, Style
from config.send_time_models import SceneSendTime
from triggers.budget import TriggerBudget
from triggers.classify import BEHAVIOUR_TAGS, TAG_GROUPS
from triggers.dates import MAX_NAME_CHARS, NOT_ATTRIBUTES
from triggers.host import DEFAULT_MAX_FUTURE_MS, InputRules
from triggers.interest import InterestRules
from triggers.kinds import kind_names
from triggers.kinds.catalog import CatalogScene
from triggers.predicates import Predicate, parse_predicate
from triggers.scenes import (
    AbsenceScene,
    ArrivalScene,
    DateScene,
    Limits,
    RepeatScene,
    ReplenishmentScene,
    Scene,
    SequenceScene,
)
from triggers.userfilter import ClassifyRules, UserFilter
from triggers.zones import ZONE_RULE, zone_or_none


def _predicate(value: Any) -> Predicate:
    if isinstance(value, Predicate):
        return value
    return parse_predicate(value)


PredicateField = Annotated[
    Predicate,
    BeforeValidator(_predicate),
    PlainSerializer(lambda p: {n: repr(c) for n, c in p.conditions}),
]



_TAG_WORDS = ", ".join(sorted(TAG_GROUPS["week"] | TAG_GROUPS["work"]) + [
    f"{prefix}<{'|'.join(sorted(t.split(':', 1)[1] for t in TAG_GROUPS[group]))}>"
    for group, prefix in (("tod", "tod:"), ("style", "style:"), ("segment", "segment:"),
                          ("cycle", "cycle:"))
])


def _behaviour_tag(value: str) -> str:
    if value not in BEHAVIOUR_TAGS:
        raise ValueError(
            f"unknown tag {value!r}: a scene filter sees only the behaviour tags the engine "
            f"computes from the profile ({_TAG_WORDS}); tags set by strategies "
            "(churned, prefers_<channel>) live in the tag store and cannot filter a scene"
        )
    return value


def _one_as_list(value: Any) -> Any:
    """``segment: loyal`` is short for ``segment: {in: [loyal]}`` (like predicates)."""
    return {"in": [value]} if isinstance(value, str) else value


BehaviourTag = Annotated[str, AfterValidator(_behaviour_tag)]
TagList = Annotated[list[BehaviourTag], Field(min_length=1)]


class TagsModel(TagConditionModel):
    """``all`` must all hold, at least one of ``any``, none of ``none``."""

    all: TagList | None = None
    any: TagList | None = None
    none: TagList | None = None

    @model_validator(mode="after")
    def _satisfiable(self) -> TagsModel:
        if self.all is None and self.any is None and self.none is None:
            raise ValueError("state at least one of all, any, none")
        both = sorted(set(self.all or ()) & set(self.none or ()))
        if both:
            raise ValueError(f"{', '.join(both)} in both all and none: never holds")
        for group, members in TAG_GROUPS.items():
            clash = sorted(members & set(self.all or ()))
            if len(clash) > 1:
                raise ValueError(f"all: {' and '.join(clash)} never hold together "
                                 f"(a user has one {group} tag)")
        return self


class SegmentChoice(StrictModel):
    in_: list[Segment] = Field(alias="in", min_length=1)


class StyleChoice(StrictModel):
    in_: list[Style] = Field(alias="in", min_length=1)


class UserModel(StrictModel):
    """A scene's user filter (docs/semantics-notes.md, "User filters")."""

    tags: TagsModel | None = None
    segment: Annotated[SegmentChoice | None, BeforeValidator(_one_as_list)] = None
    style: Annotated[StyleChoice | None, BeforeValidator(_one_as_list)] = None

    @model_validator(mode="after")
    def _not_empty(self) -> UserModel:
        if self.tags is None and self.segment is None and self.style is None:
            raise ValueError("a user filter states at least one of tags, segment, style")
        return self

    def to_filter(self, rules: ClassifyRules) -> UserFilter:
        tags = (self.tags or TagsModel.model_construct()).condition()
        return UserFilter(
            rules,
            tags.all,
            tags.any or frozenset(),
            tags.none,
            frozenset(self.segment.in_) if self.segment else None,
            frozenset(self.style.in_) if self.style else None,
        )


def _filter(user: UserModel | None, rules: ClassifyRules) -> UserFilter | None:
    return None if user is None else user.to_filter(rules)



def _goal_event(value: Any) -> Any:
    """``event: purchase`` is short for the predicate ``{type: purchase}``."""
    return {"type": value} if isinstance(value, str) else value


class GoalModel(StrictModel):
    """What a scene or strategy is for: an event matching ``event`` (an event
    type or a predicate) within ``within`` of the trigger or of entering. A
    user who meets a strategy's goal leaves the journey; the report counts it
    as the unit's conversion (docs/measurement.md). The engine never reads a
    scene's goal: it changes no trigger."""

    event: Annotated[PredicateField, BeforeValidator(_goal_event)]
    within: Duration = Field(gt=0)


class RepeatModel(SceneSendTime):
    kind: Literal["repeat"]
    when: PredicateField
    count: int = Field(ge=1, strict=True)
    within: Duration = Field(gt=0)
    per: str | None = Field(default=None, min_length=1)
    unless: PredicateField | None = None
    cooldown: Duration | None = None
    user: UserModel | None = None
    goal: GoalModel | None = None

    def to_scene(self, name: str, rules: ClassifyRules) -> RepeatScene:
        return RepeatScene(name, self.when, self.count, self.within, self.per, self.unless,
                           self.cooldown, _filter(self.user, rules))


class AbsenceModel(SceneSendTime):
    kind: Literal["absence"]
    start: PredicateField
    after: Duration
    cancel: PredicateField | None = None
    user: UserModel | None = None
    goal: GoalModel | None = None

    def to_scene(self, name: str, rules: ClassifyRules) -> AbsenceScene:
        return AbsenceScene(name, self.start, self.after, self.cancel, _filter(self.user, rules))


class ArrivalModel(SceneSendTime):
    kind: Literal["arrival"]
    when: PredicateField
    per: str | None = Field(default=None, min_length=1)
    cooldown: Duration | None = None
    user: UserModel | None = None
    goal: GoalModel | None = None

    def to_scene(self, name: str, rules: ClassifyRules) -> ArrivalScene:
        return ArrivalScene(name, self.when, self.per, self.cooldown, _filter(self.user, rules))


class SequenceModel(SceneSendTime):
    """``first``, then ``then`` within ``within``, no ``unless`` in between
    (docs/semantics-notes.md, "The sequence kind")."""

    kind: Literal["sequence"]
    first: PredicateField
    then: PredicateField
    within: Duration = Field(gt=0)
    per: str | None = Field(default=None, min_length=1)
    unless: PredicateField | None = None
    cooldown: Duration | None = None
    user: UserModel | None = None
    goal: GoalModel | None = None

    def to_scene(self, name: str, rules: ClassifyRules) -> SequenceScene:
        return SequenceScene(name, self.first, self.then, self.within, self.per, self.unless,
                             self.cooldown, _filter(self.user, rules))


class ReplenishmentModel(SceneSendTime):
    """The expected next purchase (of ``category``) overdue by ``margin``
    (docs/semantics-notes.md, "The replenishment kind")."""

    kind: Literal["replenishment"]
    margin: Duration
    category: str | None = Field(default=None, min_length=1, max_length=200)
    min_intervals: int = Field(default=2, ge=1, le=1000, strict=True)
    max_spread: float | None = Field(default=None, gt=0)
    user: UserModel | None = None
    goal: GoalModel | None = None

    def to_scene(self, name: str, rules: ClassifyRules) -> ReplenishmentScene:
        return ReplenishmentScene(name, self.margin, self.category, self.min_intervals,
                                  self.max_spread, _filter(self.user, rules))


class DateModel(SceneSendTime):
    """``offset_days`` before (negative) or after the date attribute
    ``attribute``, at local ``at``, once per period (docs/semantics-notes.md,
    "The date kind")."""

    kind: Literal["date"]
    attribute: str = Field(min_length=1, max_length=MAX_NAME_CHARS,
                           pattern=r"^[A-Za-z0-9_.:-]+$")
    offset_days: int = Field(default=0, ge=-366, le=366, strict=True)
    at: str = Field(default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    every: Literal["year", "none"] = "year"
    timezone: str = "UTC"
    user: UserModel | None = None
    goal: GoalModel | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if zone_or_none(value) is None:
            raise ValueError(f"unknown time zone {value!r} (use {ZONE_RULE})")
        return value

    @field_validator("attribute")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in NOT_ATTRIBUTES:
            raise ValueError(f"{value!r} is a field of every event, not a date attribute")
        return value

    def to_scene(self, name: str, rules: ClassifyRules) -> DateScene:
        hours, minutes = self.at.split(":")
        return DateScene(name, self.attribute, self.offset_days,
                         int(hours) * 60 + int(minutes), self.every, self.timezone,
                         _filter(self.user, rules))


class _CatalogModel(SceneSendTime):
    """What the catalog kinds share (docs/semantics-notes.md, "Catalog scenes")."""

    stock_factor: float | None = Field(default=None, gt=0, le=1_000_000)
    user: UserModel | None = None
    goal: GoalModel | None = None

    def _scene(self, name: str, kind: str, rules: ClassifyRules, **more: Any) -> CatalogScene:
        return CatalogScene(name, kind, stock_factor=self.stock_factor,
                            user=_filter(self.user, rules), **more)


class BackInStockModel(_CatalogModel):
    kind: Literal["back_in_stock"]
    variant_only: bool = False

    def to_scene(self, name: str, rules: ClassifyRules) -> CatalogScene:
        return self._scene(name, self.kind, rules, variant_only=self.variant_only)


class PriceDropModel(_CatalogModel):
    """At least ``min_percent`` and ``min_amount_cents`` below the price the
    user saw (each where set); several within ``digest`` make one message."""

    kind: Literal["price_drop"]
    min_percent: float | None = Field(default=None, gt=0, le=100)
    min_amount_cents: int | None = Field(default=None, ge=1, strict=True)
    digest: Duration | None = Field(default=None, gt=0)

    def to_scene(self, name: str, rules: ClassifyRules) -> CatalogScene:
        bp = None if self.min_percent is None else round(self.min_percent * 100)
        return self._scene(name, self.kind, rules, min_drop_bp=bp,
                           min_drop_cents=self.min_amount_cents, digest_ms=self.digest)


class NewArrivalModel(SceneSendTime):
    """New products in a category the user browses: one digest per ``digest``."""

    kind: Literal["new_arrival"]
    digest: Duration = Field(default=86_400_000, gt=0)
    user: UserModel | None = None
    goal: GoalModel | None = None

    def to_scene(self, name: str, rules: ClassifyRules) -> CatalogScene:
        return CatalogScene(name, self.kind, digest_ms=self.digest, user=_filter(self.user, rules))


class CatalogInterestModel(StrictModel):
    """Who counts as interested in a product (``catalog_interest``; the
    catalog scenes use it, nothing else does)."""

    within: Duration = Field(default=30 * 86_400_000, gt=0)
    views: int = Field(default=2, ge=1, le=1000, strict=True)
    view_types: list[str] = Field(default_factory=lambda: ["view"], min_length=1)
    strong_types: list[str] = Field(default_factory=lambda: ["cart", "favorite", "notify_me"])
    max_users: int = Field(default=10_000, ge=1, le=10_000_000, strict=True)

    def rules(self) -> InterestRules:
        return InterestRules(self.within, self.views, frozenset(self.view_types),
                             frozenset(self.strong_types), self.max_users)


# One config model per kind of the registry (triggers.kinds), keyed by `kind`.
SCENE_MODELS = (RepeatModel, AbsenceModel, ArrivalModel, SequenceModel, ReplenishmentModel,
                DateModel, BackInStockModel, PriceDropModel, NewArrivalModel)
SceneModel = Annotated[RepeatModel | AbsenceModel | ArrivalModel | SequenceModel
                       | ReplenishmentModel | DateModel | BackInStockModel | PriceDropModel
                       | NewArrivalModel, Field(discriminator="kind")]


def model_kind(model: type[BaseModel]) -> str:
    """The ``kind`` literal a scene model is for."""
    literal: Any = model.model_fields["kind"].annotation
    name: str = literal.__args__[0]
    return name


def _models_cover_the_registry() -> None:
    models = tuple(model_kind(m) for m in SCENE_MODELS)
    if models != kind_names():
        raise RuntimeError(f"scene config models {models} != the kinds {kind_names()}")


_models_cover_the_registry()  # a kind without its model (or the reverse) fails at import


class TriggerBudgetModel(StrictModel):
    """At most ``count`` triggers per user within ``within`` (event time);
    more are refused with a decision record (:mod:`triggers.budget`)."""

    count: int = Field(ge=1, le=1_000_000, strict=True)
    within: Duration = Field(ge=1)

    def budget(self) -> TriggerBudget:
        return TriggerBudget(self.count, self.within)


# The shipped budget: the shared samples' busiest user gets 9 triggers within
# an hour (OTTO; rees46: 4), a bot 100,000 in 30 minutes (issue 19).
DEFAULT_TRIGGER_BUDGET = {"count": 20, "within": "1h"}


class EngineModel(StrictModel):
    """Engine bounds (see :class:`triggers.scenes.Limits`)."""

    late_events: Duration = 300_000
    max_window_entries: int = Field(default=64, ge=1, le=100_000, strict=True)
    max_keys_per_scene: int = Field(default=256, ge=1, le=1_000_000, strict=True)
    max_line_bytes: int = Field(default=1 << 20, ge=64, strict=True)
    # user_id and per values, in characters; >= 20 so any 64-bit integer id fits
    max_id_chars: int = Field(default=256, ge=20, le=1 << 20, strict=True)
    # Event time ahead of the wall clock: dead-lettered as future_ts beyond it
    # (wall clock policy; null: no bound). Under the event clock (replay,
    # worker --clock event) only when max_future_event_clock is set.
    max_future: Duration | None = DEFAULT_MAX_FUTURE_MS
    max_future_event_clock: Duration | None = None
    # null: no per-user limit on triggers
    max_triggers_per_user: TriggerBudgetModel | None = TriggerBudgetModel.model_validate(
        DEFAULT_TRIGGER_BUDGET)

    def limits(self) -> Limits:
        budget = self.max_triggers_per_user
        return Limits(self.late_events, self.max_window_entries, self.max_keys_per_scene,
                      None if budget is None else budget.budget())

    def input_rules(self) -> InputRules:
        """How the engine host reads raw input (line size, identifier length,
        event time against the wall clock)."""
        return InputRules(self.max_line_bytes, self.max_id_chars, self.max_future,
                          self.max_future_event_clock)


def build_scenes(models: dict[str, Any], rules: ClassifyRules) -> list[Scene]:
    """Scenes in config order; ``rules`` are the thresholds user filters classify with."""
    return [model.to_scene(name, rules) for name, model in models.items()]
