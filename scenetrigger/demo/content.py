"""What the demo says would be sent for a trigger (dry run, nothing is sent).

:class:`PipelineContent` (the default) runs the real content and delivery
pipeline (:func:`channels.assembly.open_delivery`) in dry-run mode over the demo catalog, so
the console shows the variant chosen for the user's browsing style and value
segment (千人千面), and what caps and quiet hours decide.
:class:`BuiltinContent` is a small stand-in without the pipeline: one line
per scene, worded for the user's persona.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from channels.assembly import Delivery, open_delivery
from channels.content.catalog import MemoryCatalog
from channels.content.catalog import Product as CatalogProduct
from channels.pipeline import Outcome
from config.models import AppConfig
from config.strategy_models import (
    StrategiesModel,
    StrategyModel,
    load_strategy_file,
    resolve_include,
)
from scenetrigger.demo.personas import CATALOG, PERSONA_LABELS, product_name
from scenetrigger.runtime.embedded import ContentPreview, ContentSource, StateLookup, TriggerContext
from triggers.errors import ConfigError
from triggers.events import Trigger
from triggers.state import UserState

SHOP_URL = "https://shop.example.com"
_MAX_TEXT = 300  # previews are for display: a long body is cut

_BUILTIN: dict[str, dict[str, tuple[str, str]]] = {
    # scene -> persona -> (subject, text); "*" is the default wording.
    "repeat_view_no_purchase": {
        "searcher": ("Still comparing {product}?", "Top-rated picks for '{query}', {product} first"),
        "browser": ("{product} caught your eye", "More like {product} in {category}"),
        "promo_hunter": ("{product} is on sale", "The deal on {product} ends tonight"),
        "loyal": ("Reserved for you: {product}", "Members' price on {product}"),
        "*": ("{product} caught your eye", "You looked at {product} a few times"),
    },
    "cart_abandonment": {
        "abandoner": ("You left {product} in your cart", "{product} is still waiting for you"),
        "promo_hunter": ("Your cart, and today's deals", "Finish with {product}: the sale ends soon"),
        "loyal": ("Your cart is saved", "One tap to reorder {product}"),
        "*": ("You left something in your cart", "Your cart is waiting for you"),
    },
    "promo_arrival": {
        "promo_hunter": ("Deals picked for you", "Hot right now on {page}"),
        "loyal": ("Members get first pick", "Early access on {page}"),
        "*": ("Welcome to the sale", "The sale is on: {page}"),
    },
}


class BuiltinContent:
    """One preview per trigger on the ``preview`` channel."""

    name = "builtin"

    async def preview(self, trigger: Trigger, context: TriggerContext) -> tuple[
            ContentPreview, ...]:
        wording = _BUILTIN.get(trigger.scene, {})
        subject, text = wording.get(context.persona) or wording.get("*") or (
            trigger.scene, "scene fired")
        profile = context.profile
        product_id: Any = trigger.key if trigger.scene == "repeat_view_no_purchase" else None
        if product_id is None and profile is not None:
            product_id = profile.last_product
        values = {
            "product": product_name(product_id) or (f"item {product_id}" if product_id else
                                                    "your item"),
            "query": (profile.last_query if profile is not None else None) or "your search",
            "category": getattr(profile, "last_category", None) or "this category",
            "page": trigger.key or "the sale",
        }
        return (ContentPreview("preview", subject.format(**values), text.format(**values),
                               f"builtin:{PERSONA_LABELS.get(context.persona, 'any')}"),)

    async def release(self, now_ms: int, states: StateLookup) -> list[
            tuple[Trigger, ContentPreview]]:
        return []  # nothing is ever held back

    async def close(self) -> None:
        return None


def demo_catalog() -> list[CatalogProduct]:
    """The persona catalog as the content pipeline's products."""
    return [
        CatalogProduct(p.product_id, p.name, round(p.price * 100),
                       f"{SHOP_URL}/p/{p.product_id}", f"{SHOP_URL}/img/{p.product_id}.jpg",
                       p.category, p.brand, p.is_new, p.discount_pct)
        for p in CATALOG.values()
    ]


class PipelineContent:
    """The real content and delivery pipeline (variants per style and segment,
    caps, quiet hours, dedupe). In dry-run mode every message is rendered and
    decided on, none is sent, and channels show as ``<channel>-dry-run``; a
    live pipeline (``scenetrigger.demo.live``) sends, and shows the channel."""

    name = "pipeline"

    def __init__(self, delivery: Delivery, owns: bool = True) -> None:
        self.delivery = delivery
        self._owns = owns  # close the delivery in close() (the live demo closes its own)
        self.pipeline = delivery.pipeline
        self.label = "-dry-run" if self.pipeline.mode == "dry-run" else ""
        self._held: dict[str, Trigger] = {}  # deferred trigger id -> trigger
        # Released journey sends go to their strategy's subscriber, not the trigger list.
        self.on_order_release: Callable[[Outcome], None] | None = None

    @classmethod
    def from_config(cls, config: AppConfig, registry: Any = None,
                    journeys: Iterable[StrategyModel] = ()) -> PipelineContent:
        return cls(open_delivery(without_tracking(config), "dry-run", metrics=registry,
                                 catalog=MemoryCatalog(demo_catalog()), journeys=journeys))

    async def preview(self, trigger: Trigger, context: TriggerContext) -> tuple[
            ContentPreview, ...]:
        outcome = await self.pipeline.deliver(trigger, context.state, context.sim_ms)
        if outcome.status == "deferred":
            self._held[outcome.trigger_id] = trigger
        return (await self._preview(outcome, trigger, context.state, context.sim_ms),)

    async def release(self, now_ms: int, states: StateLookup) -> list[
            tuple[Trigger, ContentPreview]]:
        released = []
        for outcome in await self.pipeline.release_due(now_ms, states):
            if outcome.order is not None:
                if self.on_order_release is not None:
                    self.on_order_release(outcome)
                continue
            trigger = self._held.pop(outcome.trigger_id, None) or Trigger(
                outcome.scene, outcome.user_id, None, now_ms)
            state = states(outcome.user_id)
            released.append((trigger, await self._preview(outcome, trigger, state, now_ms)))
        return released

    async def _preview(self, outcome: Outcome, trigger: Trigger, state: UserState | None,
                       now_ms: int) -> ContentPreview:
        status = "send" if outcome.status == "delivered" else outcome.status
        message = outcome.message
        if message is not None:
            subject, text, channel = message.subject, message.text, message.channel
        else:
            # Held back: still show what the user would get (rendering has no side effects).
            choice = await self.pipeline.selector.select(trigger, state, now_ms)
            rendered = choice.render(None)
            subject, text = rendered.subject, rendered.text
            channel = choice.channels[0] if choice.channels else "none"
        return ContentPreview(f"{channel}{self.label}", subject, text[:_MAX_TEXT],
                              outcome.variant, status, outcome.reason, outcome.style,
                              outcome.segment, outcome.due_ms)

    async def close(self) -> None:
        if self._owns:
            await self.delivery.aclose()


def without_tracking(config: AppConfig) -> AppConfig:
    """The config with click and open tracking off: no ``serve`` runs in the demo."""
    delivery = config.delivery
    tracking = delivery.tracking.model_copy(update={"base_url": None})
    return config.model_copy(update={"delivery": delivery.model_copy(
        update={"tracking": tracking})})


CONTENT_SOURCES = ("pipeline", "builtin")


def pick_content(config: AppConfig, source: str = "pipeline", registry: Any = None,
                 journeys: Iterable[StrategyModel] = ()) -> ContentSource:
    """The delivery pipeline in dry run (default), or the built-in one-liners.
    ``journeys``: the strategies whose send channels the dry run offers too."""
    if source == "pipeline":
        return PipelineContent.from_config(config, registry, journeys)
    if source == "builtin":
        return BuiltinContent()
    raise ValueError(f"unknown content source {source!r}")


SHIPPED_DEMO_STRATEGIES = ("reactivation",)


def demo_journeys(config: AppConfig, choice: str = "auto",
                  scale: float = 1.0) -> dict[str, StrategyModel]:
    """The strategies the demo runs, waits divided by ``scale``.

    ``auto``: the config's strategies, or the shipped reactivation strategy
    (and the winback it enrols into) when the config has none; ``none``:
    nothing; otherwise include refs separated by commas (``reactivation`` or
    a file path)."""
    from pydantic import ValidationError

    from strategies.embedded import scaled

    if choice == "none":
        return {}
    if choice == "auto":
        models = config.strategies.all_journeys()
        if not models:
            models = StrategiesModel(include=list(SHIPPED_DEMO_STRATEGIES)).all_journeys()
    else:
        refs = [ref.strip() for ref in choice.split(",") if ref.strip()]
        try:
            models = {}
            for ref in refs:
                models.update(load_strategy_file(resolve_include(ref)))
            StrategiesModel(journeys=models)  # enrol targets must exist
        except ValidationError as exc:
            problems = [str(e.get("ctx", {}).get("error", e["msg"])) for e in exc.errors()]
            raise ConfigError([f"--strategies {choice!r}: {p}" for p in problems]) from None
        except ValueError as exc:
            raise ConfigError([f"--strategies {choice!r}: {exc}"]) from None
    return scaled(models, scale)
