"""Content variants by locale: the directory's locale, else the events',
else content.default_locale; the user's language first, then the default
language; the shipped content speaks Chinese to zh users."""

from __future__ import annotations

from channels.audience.directory import MemoryDirectory, contact_from
from channels.audience.recipient import Recipient, Rules, open_recipient
from channels.content.catalog import MemoryCatalog
from channels.content.select import ContentSelector
from config.content_models import ContentModel, default_content
from config.loader import load_config_text
from tests.channels.content_factories import PHONE, T0, catalog, user_state
from triggers.events import Event, Trigger
from triggers.state import UserState

CONTENT = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
content:
  inherit: false
  scenes:
    promo_arrival:
      variants:
        - {name: zh_hot, when: {locale: [zh]}, products: hot, subject: "热卖", text: "${products}"}
        - {name: tw, when: {locale: [zh-TW]}, products: none, subject: "熱賣", text: "台灣"}
        - {name: en, products: none, subject: "Deals", text: "Deals"}
      fallback: {subject: "Sale", text: "Sale"}
      fallbacks:
        zh: {subject: "促销", text: "促销"}
"""


def speaks(locale: str | None) -> Recipient:
    """A recipient whose directory (or preview) says ``locale``."""
    return open_recipient("u", locale=locale)


def selector(content: ContentModel, products: MemoryCatalog | None = None) -> ContentSelector:
    return ContentSelector(content, products if products is not None else catalog())


async def test_the_users_language_first_then_the_default_language() -> None:
    content = load_config_text(CONTENT).content
    pick = selector(content)
    trig = Trigger("promo_arrival", "u", "/promo/1", T0)
    chosen = {loc: (await pick.select(trig, None, T0, speaks(loc))).variant
              for loc in ("zh-CN", "zh", "zh-TW", "en", "fr", None)}
    assert chosen == {"zh-CN": "zh_hot", "zh": "zh_hot", "zh-TW": "tw", "en": "en",
                      "fr": "en", None: "en"}
    # No hot product: a zh user falls back to the default language's variant...
    empty = selector(content, MemoryCatalog([]))
    assert (await empty.select(trig, None, T0, speaks("zh"))).variant == "en"


async def test_the_fallback_follows_the_locale() -> None:
    text = CONTENT.replace('        - {name: en, products: none, subject: "Deals", text: "Deals"}\n',
                           "").replace('        - {name: tw, when: {locale: [zh-TW]}, products: '
                                       'none, subject: "熱賣", text: "台灣"}\n', "")
    content = load_config_text(text).content
    empty = selector(content, MemoryCatalog([]))
    trig = Trigger("promo_arrival", "u", "/promo/1", T0)
    zh = await empty.select(trig, None, T0, speaks("zh-CN"))
    en = await empty.select(trig, None, T0, speaks("en"))
    assert (zh.variant, zh.render().subject) == ("generic_zh", "促销")
    assert (en.variant, en.render().subject) == ("generic", "Sale")


async def test_the_events_locale_counts_when_the_directory_has_none() -> None:
    state = UserState()
    state.profile.update(Event("u", T0, "view", {"product_id": PHONE, "locale": "zh-CN"}))
    assert UserState.decode(state.encode()).profile.locale == "zh-CN"
    pick = selector(default_content())
    trig = Trigger("cart_abandonment", "u", PHONE, T0)
    from_events = await pick.select(trig, state, T0)
    assert from_events.variant == "zh_cart_reminder"
    assert "还在您的购物车里" in from_events.render().subject
    directory_says_en = await pick.select(trig, state, T0, speaks("en"))
    assert directory_says_en.variant == "cart_reminder"


async def test_shipped_content_has_chinese_for_every_scene_and_journey_ref() -> None:
    content = default_content()
    pick = selector(content)
    for scene in content.scenes:
        for style in ("search_driven", "category_browser", "promo_driven", "undetermined"):
            state = user_state("u", style)
            trig = Trigger(scene, "u", PHONE, T0)
            zh = (await pick.select(trig, state, T0, speaks("zh-CN"))).render()
            en = (await pick.select(trig, state, T0, speaks("en"))).render()
            assert any("\u4e00" <= ch <= "\u9fff" for ch in zh.subject), (scene, style, zh)
            assert not any("\u4e00" <= ch <= "\u9fff" for ch in en.subject), (scene, style, en)
    for ref in content.journeys:
        zh_ref = pick.choose_ref(ref, "u", user_state("u", "undetermined"), T0,
                                 speaks("zh"))
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh_ref.render().subject), ref


async def test_the_directory_locale_reaches_the_pipeline() -> None:
    from channels.assembly import DryRunSender, build_pipeline
    from channels.audience.consent import MemoryConsentStore
    from channels.audience.recipient import Audience

    cfg = load_config_text(CONTENT)
    directory = MemoryDirectory()
    await directory.put(contact_from("li", {"locale": "zh-CN"}))
    await directory.put(contact_from("ann", {"locale": "en"}))
    audience = Audience(directory, MemoryConsentStore(), Rules())
    pipe = build_pipeline(cfg, "dry-run", DryRunSender(), catalog=catalog(),
                          audience=audience)
    li = await pipe.deliver(Trigger("promo_arrival", "li", "/promo/1", T0), None, T0)
    ann = await pipe.deliver(Trigger("promo_arrival", "ann", "/promo/1", T0), None, T0)
    assert (li.variant, ann.variant) == ("zh_hot", "en")
