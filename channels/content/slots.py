"""On-site slots: the content a visitor gets now, chosen from their live
profile and tags by the rules messages use (:mod:`channels.content.select`:
a search-driven visitor the product they looked for, a category browser new
arrivals of their category, a promo-driven visitor hot deals; ``when``
segment and tag rules on top).

A slot is a scene of a :class:`ContentSelector` of its own; a visitor
without a live profile gets the slot's ``default`` (a second selector whose
scene has only that fallback). Nothing here reads Redis: the caller brings
the profile and tags (``GET /slots``: one pipelined round trip), and the
catalog is read through a cache (:class:`~channels.content.catalog.CachedCatalog`).
The answer is data, escaped like a message's HTML body; no template runs
anything (:mod:`config.safe_template`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from channels.content.catalog import Catalog
from channels.content.select import ContentChoice, ContentSelector, price_text, safe_url
from config.content_models import ContentModel, SceneContentModel
from config.slot_models import SlotModel
from triggers.events import Trigger
from triggers.profile import Profile
from triggers.state import UserState


@dataclass(frozen=True, slots=True)
class SlotAnswer:
    """What ``GET /slots/{slot}`` returns: ``known`` the visitor had a live
    profile (and a valid signature) and the content was chosen for them."""

    slot: str
    choice: ContentChoice
    known: bool

    def to_json(self, link: Callable[[str], str] | None = None) -> dict[str, Any]:
        """``link`` rewrites product URLs (the signed click redirect)."""
        rewrite = link or (lambda url: url)
        rendered = self.choice.render(rewrite)
        currency = self.choice.currency
        products = []
        for p in self.choice.products:
            url = safe_url(p.url)
            products.append({"id": p.product_id, "name": p.name, "category": p.category,
                             "price": f"{currency}{price_text(p)}", "discount": p.discount,
                             "image": safe_url(p.image), "link": rewrite(url) if url else ""})
        return {"slot": self.slot, "variant": self.choice.variant,
                "fallback": self.choice.fallback, "known": self.known,
                "title": rendered.subject, "body": rendered.text, "html": rendered.html,
                "products": products}


class SlotContent:
    """Every configured slot's variants, compiled once per config."""

    def __init__(self, content: ContentModel, slots: Mapping[str, SlotModel],
                 catalog: Catalog, default_tz: str | None = None) -> None:
        self._slots = dict(slots)
        chosen = content.model_copy(update={"scenes": dict(slots), "journeys": {}})
        self._selector = ContentSelector(chosen, catalog, default_tz)
        defaults = {name: SceneContentModel(fallback=slot.default_content())
                    for name, slot in slots.items()}
        self._defaults = ContentSelector(
            content.model_copy(update={"scenes": defaults, "journeys": {}}), catalog, default_tz)

    def __contains__(self, slot: str) -> bool:
        return slot in self._slots

    def model(self, slot: str) -> SlotModel:
        return self._slots[slot]

    async def choose(self, slot: str, user_id: str, profile: Profile | None,
                     tags: Iterable[str], now_ms: int) -> SlotAnswer:
        """The content for this visitor now; ``profile`` None: the slot's default."""
        trigger = Trigger(slot, user_id, None, now_ms)
        if profile is None:
            return SlotAnswer(slot, await self._defaults.select(trigger, None, now_ms), False)
        state = UserState()
        state.profile = profile
        choice = await self._selector.select(trigger, state, now_ms, tags=tags)
        return SlotAnswer(slot, choice, True)
