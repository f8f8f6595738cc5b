"""Pydantic models of the ``strategies`` section: journeys, lead scoring,
control groups, attribution and tag rules.

A journey is a list of steps; each step has exactly one action key (send,
wait, branch, tag, score, enrol, audience, exit) and an optional ``id`` that branches
jump to. Errors name the strategy, the step (number and id) and the field.
Journeys may also live in their own YAML files (``include``): a file is a
mapping of strategy name -> strategy, e.g. ``config/strategies/reactivation.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from config.base import Duration, StrictModel
from config.base import TagConditionModel as BaseTagCondition
from config.scene_models import GoalModel
from config.send_time_models import SendTimeModel
from config.yaml_load import safe_load_unique
from triggers.churn import BgNbd

SHIPPED_STRATEGIES_DIR = Path(__file__).with_name("strategies")
FEEDBACK_EVENTS = ("opened", "clicked", "shared", "delivered", "converted", "purchased")
EXIT = "exit"
NEXT = "next"

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]



class SendModel(StrictModel):
    """One message. ``channels`` sends on several at once (SMS and WeChat);
    a user's preferred channel (tag ``prefers_<channel>``) goes first."""

    channel: Name | None = None
    channels: list[Name] | None = Field(default=None, min_length=1, max_length=8)
    content: Name
    respect_preference: bool = True
    send_time: SendTimeModel | None = None  # held for the user's best hour (docs/timing.md)

    @model_validator(mode="after")
    def _one_channel_form(self) -> SendModel:
        if (self.channel is None) == (self.channels is None):
            raise ValueError("give exactly one of 'channel' or 'channels'")
        return self

    def channel_list(self) -> tuple[str, ...]:
        return (self.channel,) if self.channel is not None else tuple(self.channels or ())


class CaseModel(StrictModel):
    """A branch case: this event (optionally via this channel) -> ``goto``;
    or ``tag``: the user holds this tag when the branch starts -> ``goto`` at once."""

    event: Literal["opened", "clicked", "shared", "delivered", "converted", "purchased"] | None = None
    tag: Name | None = None
    channel: Name | None = None
    goto: Name = NEXT

    @model_validator(mode="after")
    def _event_or_tag(self) -> CaseModel:
        if (self.event is None) == (self.tag is None):
            raise ValueError("a case needs exactly one of 'event' or 'tag'")
        if self.tag is not None and self.channel is not None:
            raise ValueError("'channel' goes with 'event', not with 'tag'")
        return self


class BranchModel(StrictModel):
    """Wait up to ``within`` for the first matching case; ``else`` on timeout."""

    model_config = ConfigDict(populate_by_name=True)  # merged with StrictModel's

    within: Duration = Field(gt=0)
    when: list[CaseModel] = Field(min_length=1, max_length=16)  # not `on`: YAML reads it as true
    otherwise: Name = Field(default=NEXT, alias="else")


class TagStepModel(StrictModel):
    add: list[Name] = Field(default_factory=list, max_length=16)
    remove: list[Name] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _not_empty(self) -> TagStepModel:
        if not self.add and not self.remove:
            raise ValueError("a tag step needs 'add' and/or 'remove'")
        return self


class AudienceStepModel(StrictModel):
    """Paid media: add the user to (and/or remove from) a journey audience
    of the ``audiences:`` section (docs/ads.md, "Journey steps")."""

    add: Name | None = None
    remove: Name | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> AudienceStepModel:
        if self.add is None and self.remove is None:
            raise ValueError("an audience step needs 'add' and/or 'remove'")
        if self.add is not None and self.add == self.remove:
            raise ValueError(f"adds and removes {self.add!r}")
        return self


class StepModel(StrictModel):
    id: Name | None = None
    send: SendModel | None = None
    wait: Duration | None = None
    branch: BranchModel | None = None
    tag: TagStepModel | None = None
    score: int | None = Field(default=None, strict=True)
    enrol: Name | None = None
    audience: AudienceStepModel | None = None
    exit: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StepModel:
        set_keys = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(set_keys) != 1:
            found = ", ".join(set_keys) or "none"
            raise ValueError(
                f"a step needs exactly one of {', '.join(STEP_KINDS)} (found: {found})"
            )
        if self.exit is False:
            raise ValueError("'exit' takes true")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


STEP_KINDS = ("send", "wait", "branch", "tag", "score", "enrol", "audience", "exit")


class TagConditionModel(BaseTagCondition):
    all: list[Name] = Field(default_factory=list)
    any: list[Name] = Field(default_factory=list)
    none: list[Name] = Field(default_factory=list)


def _names(value: Any) -> Any:
    """``scene: x`` or ``scene: {in: [x, y]}`` -> a list of names."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and set(value) == {"in"}:
        return value["in"]
    return value


NameSet = Annotated[list[Name], BeforeValidator(_names)]


class EntryModel(StrictModel):
    """Who enters: on a scene's trigger and/or when tags and segment hold."""

    scene: NameSet | None = None
    tags: TagConditionModel | None = None
    segment: NameSet | None = None

    @model_validator(mode="after")
    def _something(self) -> EntryModel:
        if self.scene is None and self.tags is None and self.segment is None:
            raise ValueError("an entry needs 'scene', 'tags' and/or 'segment'")
        return self


class StrategyModel(StrictModel):
    entry: EntryModel
    steps: list[StepModel] = Field(min_length=1, max_length=64)
    reenter_after: Duration | None = None
    control_share: float | None = Field(default=None, ge=0.0, le=0.9)
    description: str = ""
    goal: GoalModel | None = None

    @model_validator(mode="after")
    def _targets(self) -> StrategyModel:
        ids = [s.id for s in self.steps if s.id is not None]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate step id {', '.join(dupes)}")
        known = {*ids, EXIT, NEXT}
        for number, step in enumerate(self.steps, 1):
            if step.branch is None:
                continue
            for ci, case in enumerate(step.branch.when):
                if case.goto not in known:
                    raise ValueError(
                        f"{step_label(number, step.id)}, field 'branch.when.{ci}.goto': "
                        f"no step with id {case.goto!r}"
                    )
            if step.branch.otherwise not in known:
                raise ValueError(
                    f"{step_label(number, step.id)}, field 'branch.else': "
                    f"no step with id {step.branch.otherwise!r}"
                )
        return self


def step_label(number: int, step_id: str | None) -> str:
    return f"step {number} ({step_id!r})" if step_id else f"step {number}"


class HandoffModel(StrictModel):
    channel: Name
    content: Name = "lead_handoff"


class ScoringModel(StrictModel):
    """Lead scoring: points per event type, exponential decay, sales handoff."""

    points: dict[Name, float] = Field(default_factory=dict)
    half_life: Duration = Field(default=7 * 86_400_000, gt=0)
    threshold: float | None = Field(default=None, gt=0)
    handoff: HandoffModel | None = None

    @model_validator(mode="after")
    def _handoff_needs_threshold(self) -> ScoringModel:
        if self.handoff is not None and self.threshold is None:
            raise ValueError("field 'handoff' needs a 'threshold'")
        return self


class ControlModel(StrictModel):
    """Holdout: ``share`` of users (by a hash of name and user) get no message.
    ``global_share`` of all users (by a hash of the user alone) get no scene
    message and enter no strategy: the global control group (docs/measurement.md)."""

    share: float = Field(default=0.0, ge=0.0, le=0.9)
    per: dict[Name, Annotated[float, Field(ge=0.0, le=0.9)]] = Field(default_factory=dict)
    salt: str = Field(default="scenetrigger", max_length=200)
    global_share: float = Field(default=0.0, ge=0.0, le=0.5)


class AttributionModel(StrictModel):
    window: Duration = Field(default=86_400_000, gt=0)


class ChurnRulesModel(StrictModel):
    """The churn model (triggers/churn.py, BG/NBD in days) and its two tags,
    read on P(active), the chance of a purchase within ``horizon_days``:
    ``churn_risk_high`` below ``risk_high_below``, ``churned`` (sticky)
    below ``churned_below``. Model defaults: the published CDNOW fit;
    ``bench/churn.py --fit FILE`` fits them on a shop's own history."""

    r: float = Field(default=0.243, gt=0)
    alpha: float = Field(default=30.898, gt=0)
    a: float = Field(default=0.793, gt=0)
    b: float = Field(default=2.426, gt=0)
    horizon_days: float = Field(default=90.0, gt=0)
    risk_high_below: float = Field(default=0.3, gt=0, le=1)
    churned_below: float = Field(default=0.1, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> ChurnRulesModel:
        if self.churned_below > self.risk_high_below:
            raise ValueError("churned_below must be at most risk_high_below")
        return self

    def model(self) -> BgNbd:
        return BgNbd(self.r, self.alpha, self.a, self.b)


class TagRulesModel(StrictModel):
    """Thresholds of the behaviour tags that are not content's (habits, style
    and segment thresholds live in ``content``; see strategies/tags.py)."""

    min_opens: int = Field(default=2, ge=1, strict=True)  # for prefers_<channel>
    churn: ChurnRulesModel = Field(default_factory=lambda: ChurnRulesModel())


class StrategiesModel(StrictModel):
    """The ``strategies`` section of AppConfig."""

    include: list[str] = Field(default_factory=list)
    journeys: dict[Name, StrategyModel] = Field(default_factory=dict)
    scoring: ScoringModel = Field(default_factory=ScoringModel)
    control: ControlModel = Field(default_factory=ControlModel)
    attribution: AttributionModel = Field(default_factory=AttributionModel)
    tags: TagRulesModel = Field(default_factory=TagRulesModel)

    def all_journeys(self) -> dict[str, StrategyModel]:
        """Inline journeys plus those of every included file (inline wins)."""
        merged: dict[str, StrategyModel] = {}
        for ref in self.include:
            merged.update(load_strategy_file(resolve_include(ref)))
        merged.update(self.journeys)
        return merged

    @model_validator(mode="after")
    def _check(self) -> StrategiesModel:
        journeys = self.all_journeys()  # raises on a bad included file
        for name, strategy in journeys.items():
            for number, step in enumerate(strategy.steps, 1):
                if step.enrol is not None and step.enrol not in journeys:
                    raise ValueError(
                        f"strategy {name!r}, {step_label(number, step.id)}, field 'enrol': "
                        f"no strategy named {step.enrol!r}"
                    )
        return self


def resolve_include(ref: str) -> Path:
    """A bare name (``reactivation``) is a shipped file; anything else a path."""
    if "/" not in ref and not ref.endswith((".yaml", ".yml", ".json")):
        return SHIPPED_STRATEGIES_DIR / f"{ref}.yaml"
    return Path(ref)


def load_strategy_file(path: Path) -> dict[str, StrategyModel]:
    """Read one strategies file; raise ValueError naming strategy/step/field."""
    try:
        raw = safe_load_unique(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read strategies file {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"strategies file {str(path)!r} is not valid YAML: {exc}") from None
    return parse_strategies(raw, source=str(path))


def parse_strategies(raw: Any, source: str = "<strategies>") -> dict[str, StrategyModel]:
    """Validate a mapping of name -> strategy, collecting every problem."""
    from pydantic import ValidationError

    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a strategies file is a mapping of name -> strategy")
    out: dict[str, StrategyModel] = {}
    problems: list[str] = []
    for name, body in raw.items():
        try:
            out[str(name)] = StrategyModel.model_validate(body)
        except ValidationError as exc:
            problems += [format_strategy_error(str(name), e, body) for e in exc.errors()]
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return out


def format_strategy_error(name: str, err: Any, body: Any = None) -> str:
    """``strategy 'x', step 3 ('push_2'), field 'send.channel': message``;
    ``body`` (the raw strategy) supplies the step id when known."""
    loc = [str(p) for p in err["loc"]]
    message = error_message(err)
    where = f"strategy {name!r}"
    if len(loc) >= 2 and loc[0] == "steps" and loc[1].isdigit():
        index = int(loc[1])
        step_id = _raw_step_id(body, index)
        where += ", " + step_label(index + 1, step_id)
        loc = loc[2:]
    if loc:
        return f"{where}, field {'.'.join(loc)!r}: {message}"
    return f"{where}: {message}"


def _raw_step_id(body: Any, index: int) -> str | None:
    try:
        step_id = body["steps"][index].get("id")
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    return step_id if isinstance(step_id, str) else None


def format_section_error(loc: list[str], err: Any) -> str:
    """An error inside AppConfig's ``strategies`` section (``loc`` after it)."""
    if len(loc) >= 2 and loc[0] == "journeys":
        return format_strategy_error(loc[1], {**err, "loc": loc[2:]})
    message = error_message(err)
    if loc:
        return f"section 'strategies', field {'.'.join(loc)!r}: {message}"
    return f"section 'strategies': {message}"


def error_message(err: Any) -> str:
    """A pydantic error in config words (shared by every section's errors)."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return str(err["ctx"]["error"]) if "ctx" in err else str(err["msg"])
    text = str(err["msg"])
    got = err.get("input")
    if got is not None and not isinstance(got, dict | list):
        text += f" (got {got!r})"
    return text
