"""Content selection (千人千面): which variant of a scene's message this user
gets, with which products, rendered safely.

Selection is deterministic: the same trigger for the same user, scene and
segment always picks the same variant. Variants whose ``when`` holds are
grouped by specificity (how many conditions they state); the most specific
group is tried first, one variant in it picked by a weighted hash of
``user_id|scene|segment``, then the rest of the group in config order, then
less specific groups. The recipient's locale (the directory's, else the
``locale`` of their events, else ``content.default_locale``) comes first:
the variants whose ``when.locale`` names it are tried in that order, then
the variants of the default language (naming no locale, or naming it),
so a missing product falls back to the default language before the
generic fallback. A variant that needs products the catalog cannot
supply is passed over; the scene's generic fallback is last and never fails.

Templates use :mod:`config.safe_template` (``${name}`` only; names checked
at config load). Values are HTML-escaped in HTML bodies; only the
``${products}`` list, which this module builds from escaped pieces, is
inserted as is. Links must be http(s); anything else becomes empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from channels.audience.recipient import Recipient
from channels.content.catalog import Catalog, Product
from channels.content.segments import (
    CATEGORY_BROWSER,
    PROMO_DRIVEN,
    SEARCH_DRIVEN,
    Segmentation,
    classify,
)
from config.content_models import (
    PRODUCT_NAMES,
    ContentModel,
    FallbackModel,
    SceneContentModel,
    VariantModel,
    VariantWhen,
)
from config.safe_template import Template, compile_template
from triggers.events import Trigger
from triggers.state import UserState
from triggers.tagcondition import TagCondition

LinkRewriter = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class RenderedContent:
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True, slots=True)
class VariantPreview:
    """One variant prepared for a user: ``matches`` its ``when`` holds (or it
    is the fallback), ``chosen`` it is the one that would be sent,
    ``no_products`` it names products the catalog has none of for this user."""

    choice: ContentChoice
    matches: bool
    chosen: bool
    no_products: bool = False


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    when: VariantWhen
    products: str
    max_products: int
    channels: tuple[str, ...]
    weight: int
    subject: Template
    text: Template
    html: Template | None
    needs_products: bool
    is_fallback: bool = False
    tags: TagCondition = field(default_factory=TagCondition)  # when's tags, built once


@dataclass(frozen=True, slots=True)
class ContentChoice:
    """The chosen variant for one trigger, ready to render per channel."""

    scene: str
    variant: str
    fallback: bool
    channels: tuple[str, ...]
    segmentation: Segmentation
    products: tuple[Product, ...]
    values: Mapping[str, str]
    subject_template: Template
    text_template: Template
    html_template: Template | None
    currency: str = ""

    def render(self, link: LinkRewriter | None = None,
               user: Mapping[str, str] | None = None) -> RenderedContent:
        """Fill the templates; ``link`` rewrites product URLs (click tracking);
        ``user`` holds the ``${user.<name>}`` values of the directory record
        (absent ones render empty, like every other value)."""
        rewrite = link or (lambda url: url)
        values = {**(user or {}), **self.values}
        products = [(p, rewrite(safe_url(p.url)) if p.url else "") for p in self.products]
        if products:
            values["product_url"] = products[0][1]
        values["products"] = "\n".join(
            f"- {p.name} {self.currency}{price_text(p)}" + (f": {url}" if url else "")
            for p, url in products
        )
        subject = self.subject_template.render(values, missing="")
        text = self.text_template.render(values, missing="")
        body = None
        if self.html_template is not None:
            escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
            escaped["products"] = _products_html(products, self.currency)
            body = self.html_template.render(escaped, missing="")
        return RenderedContent(subject, text, body)


def _compile_variant(model: VariantModel) -> _Compiled:
    sources = [model.subject, model.text] + ([model.html] if model.html else [])
    templates = [compile_template(s) for s in sources]
    names = frozenset().union(*(t.names for t in templates))
    return _Compiled(model.name, model.when, model.products, model.max_products,
                     tuple(model.channels), model.weight, templates[0], templates[1],
                     templates[2] if model.html else None, bool(names & PRODUCT_NAMES),
                     tags=TagCondition.of(model.when.tags_all, model.when.tags_any))


HOT_LOOKAHEAD = 20  # deals read past the list's length, to find the visitor's category's


@dataclass(frozen=True, slots=True)
class _Fallbacks:
    """A scene's generic message, and its translations by locale."""

    default: _Compiled
    by_locale: tuple[tuple[str, _Compiled], ...] = ()

    def pick(self, locale: str) -> _Compiled:
        return next((c for lang, c in self.by_locale if _speaks((lang,), locale)),
                    self.default)


def _compile_fallback(model: FallbackModel, name: str | None = None) -> _Compiled:
    return _Compiled(name or model.name, VariantWhen(), "none", 0, tuple(model.channels), 1,
                     compile_template(model.subject), compile_template(model.text),
                     compile_template(model.html) if model.html else None, False, True)


class ContentSelector:
    """Picks and prepares content; the catalog is the only I/O (batched)."""

    def __init__(self, content: ContentModel, catalog: Catalog,
                 default_tz: str | None = None) -> None:
        self._content = content
        self._catalog = catalog
        self._default_tz = default_tz
        self._scenes: dict[str, tuple[list[_Compiled], _Fallbacks]] = {}
        for scene, model in content.scenes.items():
            self._scenes[scene] = self._compile_scene(model)
        self._refs = {ref: self._compile_scene(model) for ref, model in content.journeys.items()}
        self._generic = self._compile_scene(SceneContentModel())

    @staticmethod
    def _compile_scene(model: SceneContentModel) -> tuple[list[_Compiled], _Fallbacks]:
        # Exact tags (zh-TW) before bare languages (zh): the longer tag is tried first.
        by_locale = tuple((lang, _compile_fallback(f, f"{f.name}_{lang}"))
                          for lang, f in sorted(model.fallbacks.items(),
                                                key=lambda item: -len(item[0])))
        return ([_compile_variant(v) for v in model.variants],
                _Fallbacks(_compile_fallback(model.fallback), by_locale))

    def segment(self, state: UserState | None, now_ms: int,
                recipient: Recipient | None = None) -> Segmentation:
        """Style, segment and habit tags; the habits in the recipient's zone."""
        c = self._content
        return classify(state.profile if state is not None else None, c.styles, c.segments,
                        c.habits, now_ms, self._default_tz,
                        recipient.zone if recipient is not None else None)

    async def select(self, trigger: Trigger, state: UserState | None,
                     now_ms: int, recipient: Recipient | None = None,
                     tags: Iterable[str] = ()) -> ContentChoice:
        """``recipient``: its locale and zone (default: the user's events').
        ``tags``: the user's stored tags (an on-site slot's), matched by
        ``when.tags_*`` besides the habit tags."""
        seg = self.segment(state, now_ms, recipient)
        extra = sorted(set(tags).difference(seg.tags))
        if extra:
            seg = dataclasses.replace(seg, tags=(*seg.tags, *extra))
        variants, fallbacks = self._scenes.get(trigger.scene, self._generic)
        language = self._locale(recipient, state)
        for variant in self.candidates(variants, trigger, seg, language):
            products: list[Product] = []
            if variant.needs_products:
                products = await self._products(variant, trigger, state, seg.style)
                if not products:
                    continue  # missing product: try the next variant, then the fallback
            return self._choice(trigger, state, seg, variant, products)
        return self._choice(trigger, state, seg, fallbacks.pick(language), [])

    def has_ref(self, ref: str) -> bool:
        """Whether ``content.journeys`` has content for a strategy's content ref."""
        return ref in self._refs

    def choose_ref(self, ref: str, user_id: str, state: UserState | None,
                   now_ms: int, recipient: Recipient | None = None) -> ContentChoice:
        """Content for a journey send step, chosen like a scene's (style,
        segment, tags; same hash). Synchronous: journey content names no
        products, so no catalog lookup. An unknown ref gets the generic message."""
        seg = self.segment(state, now_ms, recipient)
        variants, fallbacks = self._refs.get(ref, self._generic)
        trigger = Trigger(ref, user_id, None, now_ms)
        language = self._locale(recipient, state)
        picked = next(iter(self.candidates(variants, trigger, seg, language)),
                      fallbacks.pick(language))
        return self._choice(trigger, state, seg, picked, [])

    async def every_variant(self, trigger: Trigger, state: UserState | None, seg: Segmentation,
                            journey: bool = False,
                            recipient: Recipient | None = None) -> list[VariantPreview]:
        """Every variant of a scene's (or, with ``journey``, a content ref's)
        content and its fallback, each prepared for this user as if chosen,
        in the order :meth:`candidates` would try them, then those whose
        ``when`` does not hold. Marks the one :meth:`select` would send."""
        table = self._refs if journey else self._scenes
        variants, fallbacks = table.get(trigger.scene, self._generic)
        language = self._locale(recipient, state)
        fallback = fallbacks.pick(language)
        tried = self.candidates(variants, trigger, seg, language)
        others = [v for v in variants if v not in tried]
        out: list[VariantPreview] = []
        chosen = False
        for variant in [*tried, *others, fallback]:
            products: list[Product] = []
            if variant.needs_products and not journey:
                products = await self._products(variant, trigger, state, seg.style)
            usable = (variant in tried or variant is fallback) and (
                bool(products) or not variant.needs_products)
            picked = usable and not chosen
            chosen = chosen or picked
            out.append(VariantPreview(self._choice(trigger, state, seg, variant, products),
                                      variant in tried or variant is fallback, picked,
                                      variant.needs_products and not products))
        return out

    def _locale(self, recipient: Recipient | None, state: UserState | None) -> str:
        if recipient is not None:
            found = recipient.locale
        else:
            found = state.profile.locale if state is not None else None
        return found or self._content.default_locale

    def candidates(self, variants: Sequence[_Compiled], trigger: Trigger,
                   seg: Segmentation, locale: str | None = None) -> list[_Compiled]:
        """Matching variants in the order they are tried (see the module doc):
        those of the user's language first, then the default language's."""
        default = self._content.default_locale
        mine = [v for v in variants if v.when.locale and _speaks(v.when.locale, locale or default)]
        fallback = [v for v in variants
                    if not v.when.locale or _speaks(v.when.locale, default)]
        ordered = self._tiers(mine, trigger, seg)
        return ordered + [v for v in self._tiers(fallback, trigger, seg) if v not in ordered]

    def _tiers(self, variants: Sequence[_Compiled], trigger: Trigger,
               seg: Segmentation) -> list[_Compiled]:
        tags = frozenset(seg.tags)
        matching = [v for v in variants if _matches(v, seg, tags)]
        ordered: list[_Compiled] = []
        for spec in sorted({v.when.specificity() for v in matching}, reverse=True):
            tier = [v for v in matching if v.when.specificity() == spec]
            pick = _weighted_pick(tier, f"{trigger.user_id}|{trigger.scene}|{seg.segment}")
            ordered.append(pick)
            ordered.extend(v for v in tier if v is not pick)
        return ordered

    async def _products(self, variant: _Compiled, trigger: Trigger, state: UserState | None,
                        style: str) -> list[Product]:
        source = variant.products
        if source == "auto":
            source = {SEARCH_DRIVEN: "trigger", CATEGORY_BROWSER: "category",
                      PROMO_DRIVEN: "hot"}.get(style, "trigger")
        limit = variant.max_products
        profile = state.profile if state is not None else None
        if source == "hot":
            # The deals, those of the visitor's own category first: the same top
            # list for every promo visitor showed everyone the same product.
            hot = await self._catalog.hot(limit + HOT_LOOKAHEAD)
            mine = profile.last_category if profile else None
            return sorted(hot, key=lambda p: not (mine and p.category == mine))[:limit]
        ids = [i for i in (trigger.key, profile.last_product if profile else None) if i]
        found = await self._catalog.get_many(list(dict.fromkeys(ids)))
        exact = [found[i] for i in ids if i in found][:1]
        if source == "trigger":
            return exact
        category = (exact[0].category if exact and exact[0].category else None) or (
            profile.last_category if profile else None)
        if not category:
            return []
        listed = await self._catalog.in_category(category, limit + len(exact))
        # The product they looked at first, then new and other items of its category.
        seen = {p.product_id for p in exact}
        return (exact + [p for p in listed if p.product_id not in seen])[:limit]

    def _choice(self, trigger: Trigger, state: UserState | None, seg: Segmentation,
                variant: _Compiled, products: list[Product]) -> ContentChoice:
        profile = state.profile if state is not None else None
        currency = self._content.currency
        values = {
            "user_id": trigger.user_id, "scene": trigger.scene, "key": trigger.key or "",
            "style": seg.style, "segment": seg.segment, "currency": currency,
            "category": (profile.last_category if profile else None) or "",
            "query": (profile.last_query if profile else None) or "",
        }
        if products:
            first = products[0]
            values.update({
                "product_name": first.name, "product_price": price_text(first),
                "product_url": safe_url(first.url), "product_image": safe_url(first.image),
                "product_category": first.category, "product_brand": first.brand,
                "product_discount": str(first.discount),
            })
            if first.category and not values["category"]:
                values["category"] = first.category
        return ContentChoice(trigger.scene, variant.name, variant.is_fallback, variant.channels,
                             seg, tuple(products), values, variant.subject, variant.text,
                             variant.html, currency)


def _speaks(languages: Sequence[str], locale: str) -> bool:
    """``zh`` covers ``zh-CN`` and ``zh_TW``; ``zh-CN`` only itself."""
    tag = locale.lower().replace("_", "-")
    return any(tag == lang.lower().replace("_", "-")
               or tag.startswith(lang.lower().replace("_", "-") + "-") for lang in languages)


def _matches(variant: _Compiled, seg: Segmentation, tags: frozenset[str]) -> bool:
    when = variant.when
    if when.style is not None and seg.style not in when.style:
        return False
    if when.segment is not None and seg.segment not in when.segment:
        return False
    return variant.tags.holds(tags)


def _weighted_pick(tier: Sequence[_Compiled], seed: str) -> _Compiled:
    total = sum(v.weight for v in tier)
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % total
    for variant in tier:
        point -= variant.weight
        if point < 0:
            return variant
    return tier[-1]


def price_text(product: Product) -> str:
    return f"{product.price_cents // 100}.{product.price_cents % 100:02d}"


def safe_url(url: str) -> str:
    """Only http(s) links: a ``javascript:`` URL from a catalog never reaches a body."""
    lowered = url.strip().lower()
    return url.strip() if lowered.startswith(("http://", "https://")) else ""


def _products_html(products: Sequence[tuple[Product, str]], currency: str) -> str:
    if not products:
        return ""
    esc = html.escape
    items = []
    for product, url in products:
        image = safe_url(product.image)
        img = f'<img src="{esc(image)}" alt="{esc(product.name)}" width="96"> ' if image else ""
        label = f"{img}{esc(product.name)}"
        linked = f'<a href="{esc(url)}">{label}</a>' if url else label
        items.append(f"<li>{linked} {esc(currency)}{esc(price_text(product))}</li>")
    return "<ul>" + "".join(items) + "</ul>"
