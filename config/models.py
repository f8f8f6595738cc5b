"""The root of the config tree. Each section is its own model; unknown keys
anywhere are errors."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from config.ads_models import AdsModel
from config.audience_models import AudienceModel, AudienceName, build_audiences
from config.base import StrictModel
from config.channel_models import ChannelModel
from config.content_models import ContentModel, default_content, layered_on_shipped
from config.delivery_models import DeliveryModel
from config.scene_models import CatalogInterestModel, EngineModel, SceneModel, build_scenes
from config.slot_models import SlotModel, SlotName
from config.strategy_models import StrategiesModel
from triggers.audiences.rules import Audience, Scoring
from triggers.audiences.tracker import AudienceTracker, ChangeSink
from triggers.events import IdLimits
from triggers.scenes import Scene
from triggers.state import StateStore
from triggers.userfilter import ClassifyRules


class AppConfig(StrictModel):
    """Everything an operator configures. ``scenes`` is the contract of
    SEMANTICS.md; the other sections steer delivery and strategies."""

    scenes: dict[str, SceneModel]
    engine: EngineModel = Field(default_factory=EngineModel)
    content: ContentModel = Field(default_factory=default_content)
    delivery: DeliveryModel = Field(default_factory=DeliveryModel)
    channels: dict[str, ChannelModel] = Field(default_factory=dict)
    strategies: StrategiesModel = Field(default_factory=StrategiesModel)
    ads: AdsModel = Field(default_factory=AdsModel)  # ad-platform audience sync (docs/ads.md)
    audiences: dict[AudienceName, AudienceModel] = Field(default_factory=dict)
    catalog_interest: CatalogInterestModel = Field(default_factory=CatalogInterestModel)
    slots: dict[SlotName, SlotModel] = Field(default_factory=dict)  # on-site (docs/ads.md)

    @field_validator("content", mode="before")
    @classmethod
    def _layer_content(cls, value: Any) -> Any:
        """A config's ``content:`` extends the shipped content scene by scene
        (``inherit: false`` opts out)."""
        return layered_on_shipped(value)

    def scene_list(self) -> list[Scene]:
        """Scenes in config (file) order: that is the order triggers come out.
        User filters classify with the ``content:`` thresholds and
        ``delivery.default_timezone``, as content selection and tags do."""
        content = self.content
        rules = ClassifyRules(content.styles, content.segments, content.habits,
                              self.delivery.default_timezone)
        return build_scenes(dict(self.scenes), rules)

    def classify_rules(self) -> ClassifyRules:
        content = self.content
        return ClassifyRules(content.styles, content.segments, content.habits,
                             self.delivery.default_timezone)

    def audience_list(self) -> list[Audience]:
        """The ``audiences:`` section in config order (docs/ads.md)."""
        return build_audiences(dict(self.audiences))

    def audience_tracker(self, store: StateStore,
                         sink: ChangeSink | None = None) -> AudienceTracker | None:
        """The membership tracker of the ``audiences:`` section over an
        engine's store (None without audiences to evaluate)."""
        audiences = self.audience_list()
        if not any(not a.journey for a in audiences):
            return None
        return AudienceTracker(audiences, self.classify_rules(), store,
                               self.audience_scoring(), sink)

    def audience_scoring(self) -> Scoring:
        """The lead score the audiences read: ``strategies.scoring``'s event points."""
        scoring = self.strategies.scoring
        return Scoring(dict(scoring.points), scoring.half_life)

    def channel_types(self) -> dict[str, str]:
        """Each configured channel's type (``email``, ``sms``, ...) by name:
        consent and contact points are per type (docs/audiences.md)."""
        return {name: model.type for name, model in self.channels.items()}

    def id_limits(self) -> IdLimits:
        """``engine.max_id_chars`` for user_id and every scene's ``per`` field."""
        return IdLimits.of(self.engine.max_id_chars, self.scene_list())
