"""Pydantic models of the ``audiences`` section (docs/ads.md, "Audiences").

Each audience is named by conditions on the live state, all of which must
hold: a scene fired within a window, a purchase within (or none within) a
window, behaviour tags, browsing style, value segment, a lead score range,
the locale. ``journey: true`` instead names an audience that only journey
steps (``audience: {add: NAME}``) fill. ``consent`` is the purpose the ad
sinks must find granted before they add a member (``none``: no check); the
engine does no I/O and never reads consent itself. Scene names are checked
against ``scenes:`` by the cross-reference pass (:mod:`config.xref`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from config.base import Duration, StrictModel
from config.scene_models import SegmentChoice, StyleChoice, TagsModel, _one_as_list
from triggers.audiences.rules import Audience

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def _audience_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"audience name {value!r}: use 1-100 letters, digits, '_', '.', ':' "
                         "or '-' (no '|': the topic key is audience|user_id)")
    return value


AudienceName = Annotated[str, AfterValidator(_audience_name)]
SceneNames = Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
                       Field(min_length=1, max_length=32)]
Locales = Annotated[list[Annotated[str, Field(min_length=1, max_length=35)]],
                    BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
                    Field(min_length=1, max_length=64)]


class FiredModel(StrictModel):
    """One of ``scene`` (a name or a list) fired within ``within`` before now."""

    scene: SceneNames
    within: Duration = Field(gt=0)


class PurchaseModel(StrictModel):
    """``within``: the last purchase is that recent; ``none_within``: it is
    not (or there was none): "viewed, did not buy"."""

    within: Duration | None = Field(default=None, gt=0)
    none_within: Duration | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> PurchaseModel:
        if (self.within is None) == (self.none_within is None):
            raise ValueError("give exactly one of 'within' or 'none_within'")
        return self


class ScoreRangeModel(StrictModel):
    """The lead score (``strategies.scoring``'s event points, decayed) within [min, max]."""

    min: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _range(self) -> ScoreRangeModel:
        if self.min is None and self.max is None:
            raise ValueError("give 'min' and/or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: never holds")
        return self


class AudienceModel(StrictModel):
    fired: FiredModel | None = None
    purchase: PurchaseModel | None = None
    tags: TagsModel | None = None
    style: Annotated[StyleChoice | None, BeforeValidator(_one_as_list)] = None
    segment: Annotated[SegmentChoice | None, BeforeValidator(_one_as_list)] = None
    lead_score: ScoreRangeModel | None = None
    locale: Locales | None = None
    consent: Literal["ads", "none"] = "ads"
    journey: bool = False

    @model_validator(mode="after")
    def _conditions_or_journey(self) -> AudienceModel:
        stated = [name for name in ("fired", "purchase", "tags", "style", "segment",
                                    "lead_score", "locale") if getattr(self, name) is not None]
        if self.journey and stated:
            raise ValueError(f"a journey audience has no conditions (found: {', '.join(stated)}):"
                             " journey steps alone add and remove its members")
        if not self.journey and not stated:
            raise ValueError("state at least one of fired, purchase, tags, style, segment, "
                             "lead_score, locale (or journey: true)")
        return self

    def to_audience(self, name: str) -> Audience:
        tags = self.tags.condition() if self.tags is not None else None
        purchase, score = self.purchase, self.lead_score
        return Audience(
            name,
            fired=frozenset(self.fired.scene) if self.fired else frozenset(),
            fired_within_ms=self.fired.within if self.fired else 0,
            bought_within_ms=purchase.within if purchase else None,
            none_bought_within_ms=purchase.none_within if purchase else None,
            tags=tags,
            styles=frozenset(self.style.in_) if self.style else None,
            segments=frozenset(self.segment.in_) if self.segment else None,
            score_min=score.min if score else None,
            score_max=score.max if score else None,
            locales=frozenset(x.lower() for x in self.locale) if self.locale else None,
            consent=None if self.consent == "none" else self.consent,
            journey=self.journey,
        )


def build_audiences(models: dict[str, AudienceModel]) -> list[Audience]:
    """Audiences in config order."""
    return [model.to_audience(name) for name, model in models.items()]


