"""Pydantic models of the ``content:`` section: segmentation thresholds and
per-scene content variants (千人千面).

Templates are checked at load time: only ``${name}`` placeholders from
:data:`TEMPLATE_NAMES` are allowed, so a typo or a hostile placeholder
(``${__class__.__mro__}``) is a config error naming the scene and variant.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import Field, model_validator

from config.base import Duration, StrictModel
from config.safe_template import TemplateError, compile_template
from triggers.classify import SEGMENTS, STYLES

# Placeholders a content template may use; PRODUCT_NAMES need a catalog hit.
PRODUCT_NAMES = frozenset({
    "product_name", "product_price", "product_url", "product_image", "product_category",
    "product_brand", "product_discount", "products",
})
TEMPLATE_NAMES = PRODUCT_NAMES | frozenset({
    "user_id", "scene", "key", "style", "segment", "category", "query", "currency",
})

_LOCALE_TAG = r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$"
_USER_NAME = re.compile(r"^user\.[A-Za-z_][A-Za-z0-9_]*$")
SHIPPED_CONTENT_PATH = Path(__file__).with_name("content.yaml")

Style = Literal["search_driven", "category_browser", "promo_driven", "undetermined"]
Segment = Literal["champion", "loyal", "promising", "new_or_lapsed"]
# The config words must be exactly what triggers.classify computes.
assert get_args(Style) == STYLES and get_args(Segment) == SEGMENTS
ProductSource = Literal["auto", "none", "trigger", "category", "hot"]



def _check_template(text: str | None, allow_products: bool) -> str | None:
    if text is None:
        return None
    try:
        names = compile_template(text).names
    except TemplateError as exc:
        raise ValueError(str(exc)) from None
    allowed = TEMPLATE_NAMES if allow_products else TEMPLATE_NAMES - PRODUCT_NAMES
    # ${user.<attribute>}: the user directory's record (one literal key, never code).
    unknown = sorted(n for n in names - allowed if not _USER_NAME.match(n))
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('${' + n + '}' for n in unknown)}; "
            f"allowed: {', '.join(sorted(allowed))} and user.<attribute>"
        )
    return text


class StyleRules(StrictModel):
    """Browsing style from profile counters (see docs/content.md)."""

    min_activity: int = Field(default=3, ge=1, strict=True)
    search_share: float = Field(default=0.3, gt=0, le=1)
    category_share: float = Field(default=0.3, gt=0, le=1)
    promo_share: float = Field(default=0.3, gt=0, le=1)


class SegmentRules(StrictModel):
    """RFM-style value segment: purchase amount (currency units) x frequency,
    with recency deciding lapse."""

    champion_min_purchases: int = Field(default=3, ge=1, strict=True)
    champion_min_amount: float = Field(default=500.0, ge=0)
    loyal_min_purchases: int = Field(default=2, ge=1, strict=True)
    loyal_min_amount: float = Field(default=200.0, ge=0)
    lapse_after: Duration = 90 * 86_400_000


class HabitRules(StrictModel):
    """Time-of-day, weekday/weekend, work-time and purchase-cycle tags
    (docs/timing.md; the first three need ``min_events`` events)."""

    min_events: int = Field(default=5, ge=1, strict=True)
    day_part_share: float = Field(default=0.5, gt=0, le=1)
    weekend_share: float = Field(default=0.5, gt=0, le=1)
    worktime_share: float = Field(default=0.6, gt=0, le=1)  # local 9-17 (docs/timing.md)
    cycle_min_intervals: int = Field(default=2, ge=1, strict=True)
    cycle_max_spread: float = Field(default=0.5, gt=0)


class VariantWhen(StrictModel):
    """All given conditions must hold; an absent one matches everyone."""

    style: list[Style] | None = None
    segment: list[Segment] | None = None
    tags_any: list[str] | None = None
    tags_all: list[str] | None = None
    # Languages (``zh``, ``zh-TW``): the user's locale picks the variants that
    # name it before the others are looked at (not a specificity: see
    # channels/content/select.py). Variants naming no locale are the default language's.
    locale: list[Annotated[str, Field(pattern=_LOCALE_TAG)]] | None = None

    def specificity(self) -> int:
        return sum(x is not None for x in (self.style, self.segment, self.tags_any,
                                           self.tags_all))


class VariantModel(StrictModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    when: VariantWhen = Field(default_factory=VariantWhen)
    products: ProductSource = "auto"
    max_products: int = Field(default=3, ge=1, le=20, strict=True)
    channels: list[str] = Field(default_factory=lambda: ["inbox"], min_length=1)
    weight: int = Field(default=1, ge=1, le=1000, strict=True)
    subject: str
    text: str
    html: str | None = None

    @model_validator(mode="after")
    def _templates(self) -> VariantModel:
        for text in (self.subject, self.text, self.html):
            _check_template(text, allow_products=True)
        return self


class FallbackModel(StrictModel):
    """The generic message: used when no variant matches or a product is missing.
    It cannot reference products (there may be none)."""

    name: str = "generic"
    channels: list[str] = Field(default_factory=lambda: ["inbox"], min_length=1)
    subject: str = "We picked something for you"
    text: str = "Hello! Something you looked at is waiting for you."
    html: str | None = None

    @model_validator(mode="after")
    def _templates(self) -> FallbackModel:
        for text in (self.subject, self.text, self.html):
            _check_template(text, allow_products=False)
        return self


class SceneContentModel(StrictModel):
    variants: list[VariantModel] = Field(default_factory=list)
    fallback: FallbackModel = Field(default_factory=FallbackModel)
    # The generic message in other languages, by locale (``zh``): a user of
    # that locale gets it instead of ``fallback``.
    fallbacks: dict[Annotated[str, Field(pattern=_LOCALE_TAG)], FallbackModel] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _unique_names(self) -> SceneContentModel:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate variant name(s): {', '.join(dupes)}")
        return self


class ContentModel(StrictModel):
    """Segmentation rules and, per scene, the content variants. A scene with
    no entry gets the built-in generic fallback."""

    currency: str = Field(default="¥", max_length=8)
    # The language of variants that name no locale: a user whose locale no
    # variant names gets those (docs/audiences.md, "Locale").
    default_locale: str = Field(default="en", pattern=_LOCALE_TAG)
    new_and_category_count: int = Field(default=3, ge=1, le=20, strict=True)
    styles: StyleRules = Field(default_factory=StyleRules)
    segments: SegmentRules = Field(default_factory=SegmentRules)
    habits: HabitRules = Field(default_factory=HabitRules)
    scenes: dict[str, SceneContentModel] = Field(default_factory=dict)
    # Content refs of strategy send steps (``send: {content: <ref>}``), chosen
    # like a scene's variants. A journey message has no product key, so its
    # templates may not name products.
    journeys: dict[str, SceneContentModel] = Field(default_factory=dict)
    # Read by AppConfig: layer this section on the shipped content (see
    # layered_on_shipped); false: this section is all the content there is.
    inherit: bool = True

    @model_validator(mode="after")
    def _journey_templates(self) -> ContentModel:
        for ref, model in self.journeys.items():
            for variant in model.variants:
                for text in (variant.subject, variant.text, variant.html):
                    try:
                        _check_template(text, allow_products=False)
                    except ValueError as exc:
                        raise ValueError(f"journeys.{ref}, variant '{variant.name}': "
                                         f"{exc}") from None
        return self


@functools.cache
def _shipped_raw() -> dict[str, Any]:
    try:
        raw: Any = yaml.safe_load(SHIPPED_CONTENT_PATH.read_text(encoding="utf-8"))
    except OSError:
        return {}
    content = (raw or {}).get("content", {})
    return content if isinstance(content, dict) else {}


@functools.cache
def _shipped_content() -> ContentModel:
    """The shipped example content (config/content.yaml), used as it is when
    a config brings no ``content:`` section."""
    return ContentModel.model_validate(_shipped_raw())


def default_content() -> ContentModel:
    return _shipped_content()


_LAYERED = ("scenes", "journeys")  # by name: a config's entry replaces the shipped one
_MERGED = ("styles", "segments", "habits")  # by key: a config's thresholds override


def layered_on_shipped(raw: Any) -> Any:
    """A config's raw ``content:`` on top of the shipped content: scenes and
    journey refs it names replace the shipped ones of that name, the others
    stay; thresholds it gives override, key by key. ``inherit: false`` opts
    out (the section is then all the content). Anything not a mapping is left
    to the model to reject."""
    if not isinstance(raw, dict) or raw.get("inherit", True) is not True:
        return raw
    shipped = _shipped_raw()
    merged: dict[str, Any] = {**shipped, **raw}
    for key in _LAYERED:
        own, base = raw.get(key, {}), shipped.get(key, {})
        if isinstance(own, dict) and isinstance(base, dict):
            merged[key] = {**base, **own}
    for key in _MERGED:
        own, base = raw.get(key, {}), shipped.get(key, {})
        if isinstance(own, dict) and isinstance(base, dict):
            merged[key] = {**base, **own}
    return merged


def shipped_names(key: str) -> list[str]:
    """Names of the shipped content's ``scenes`` or ``journeys``."""
    section = _shipped_raw().get(key, {})
    return [str(n) for n in section] if isinstance(section, dict) else []
