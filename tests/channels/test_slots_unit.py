"""On-site slot content: the variant and products each kind of visitor gets,
computed here from the documented rules (docs/ads.md, "On-site slots";
docs/content.md), the config errors, and the impression ids."""

from __future__ import annotations

import html

import pytest

from channels.content.catalog import CachedCatalog, MemoryCatalog, Product
from channels.content.slots import SlotContent
from channels.feedback.decisions import feedback_record
from channels.feedback.events import tracked_link
from channels.feedback.slot_ids import SLOT_CHANNEL, impression_id, impression_meta
from config.loader import load_config_text
from tests.channels.content_factories import PHONE, PHONES, T0, catalog_products, user_state
from tests.channels.slot_fixtures import category_ids, config_text, hot_ids
from triggers.errors import ConfigError


def slots(products: list[Product] | None = None) -> SlotContent:
    config = load_config_text(config_text())
    return SlotContent(config.content, config.slots,
                       MemoryCatalog(catalog_products() if products is None else products))


@pytest.mark.parametrize(("style", "segment", "tags", "variant"), [
    ("search_driven", "new_or_lapsed", [], "searcher"),
    ("category_browser", "new_or_lapsed", [], "new_in_category"),
    ("promo_driven", "new_or_lapsed", [], "hot_deals"),
    ("search_driven", "champion", [], "champion_pick"),
    ("category_browser", "loyal", ["vip"], "vip_deal"),
    ("undetermined", "new_or_lapsed", [], "generic"),
])
async def test_each_visitor_gets_the_variant_and_products_of_their_style(
        style: str, segment: str, tags: list[str], variant: str) -> None:
    profile = user_state("u1", style, segment).profile
    answer = await slots().choose("home", "u1", profile, tags, T0)
    expected = {"searcher": [PHONE], "champion_pick": [PHONE],
                "new_in_category": category_ids(PHONE, PHONES, 3),
                "hot_deals": hot_ids(2, profile.last_category),
                "vip_deal": hot_ids(1, profile.last_category), "generic": []}[variant]
    assert answer.known and answer.choice.variant == variant
    assert [p.product_id for p in answer.choice.products] == expected
    assert len(expected) == len(set(expected))


async def test_an_unknown_visitor_gets_the_default() -> None:
    answer = await slots().choose("home", "nobody", None, [], T0)
    body = answer.to_json()
    assert not answer.known and body["title"] == "Welcome" and body["products"] == []


async def test_a_search_without_the_product_falls_back_and_html_is_escaped() -> None:
    profile = user_state("u1", "search_driven").profile
    assert (await slots([]).choose("home", "u1", profile, [], T0)).choice.variant == "generic"
    profile.last_query = '<script>alert("x")</script>'
    link = "https://t.example/t/c"
    body = (await slots().choose("home", "u1", profile, [], T0)).to_json(
        lambda url: f"{link}?u={url}")
    assert body["title"] == f"Still looking for {profile.last_query}?"  # text: the page escapes
    assert "<script>" not in body["html"] and html.escape(profile.last_query) in body["html"]
    phone = next(p for p in catalog_products() if p.product_id == PHONE)
    assert body["products"][0]["link"] == f"{link}?u={phone.url}"


def test_bad_slot_config_names_file_line_slot_and_field() -> None:
    bad = config_text(extra="""
  side:
    variants:
      - {name: x, when: {style: [search_drivn]}, subject: s, text: t}
    max_age: 2d
""")
    with pytest.raises(ConfigError) as err:
        load_config_text(bad, source="site.yaml")
    text = str(err.value)
    line = bad.splitlines().index("      - {name: x, when: {style: [search_drivn]}, "
                                  "subject: s, text: t}") + 1
    assert f"site.yaml:{line}: slot 'side', field 'variants.0.when.style.0'" in text
    assert "slot 'side', field 'max_age': at most 1h (got 172800s)" in text
    directory = config_text(extra="""
  side:
    fallback: {subject: "Hi ${user.name}", text: t}
""")
    with pytest.raises(ConfigError, match=r"slot 'side': 'generic': \$\{user.name\}: a slot "
                                          r"reads no user directory"):
        load_config_text(directory)


def test_impression_ids_name_user_slot_and_variant() -> None:
    user = "a/b:c d"
    mid = impression_id("home", "hot_deals", T0, user)
    meta = impression_meta(mid)
    assert meta is not None and (meta.user_id, meta.slot, meta.variant, meta.channel) == (
        user, "home", "hot_deals", SLOT_CHANNEL)
    assert "/" not in tracked_link("", b"k", mid, "https://x").split("?")[0][len("/t/c/"):]
    for other in ("m-1", "slot:home:v:notms:u", "slot:home::1:u", "slot:home:v:1"):
        assert impression_meta(other) is None


async def test_the_cached_catalog_reads_once_per_ttl() -> None:
    reads: list[str] = []

    class Counting(MemoryCatalog):
        async def hot(self, limit: int) -> list[Product]:
            reads.append("hot")
            return await super().hot(limit)

    now = [0.0]
    cached = CachedCatalog(Counting(catalog_products()), ttl_s=5, clock=lambda: now[0])
    first = await cached.hot(3)
    assert await cached.hot(3) == first and reads == ["hot"]
    now[0] = 5.0
    await cached.hot(3)
    assert reads == ["hot", "hot"]
    assert set(await cached.get_many([PHONE, "missing"])) == {PHONE}


def test_a_slot_event_is_a_decision_record_of_its_slot() -> None:
    mid = impression_id("home", "hot_deals", T0, "ann")
    meta = impression_meta(mid)
    assert meta is not None
    event = meta.event("clicked", mid, T0 + 5)
    assert event.to_dict() == {"user_id": "ann", "ts": T0 + 5, "type": "clicked",
                               "message_id": mid, "channel": SLOT_CHANNEL, "source": "feedback",
                               "slot": "home", "variant": "hot_deals"}
    record = feedback_record(event)
    assert (record.scene, record.outcome, record.message_id) == ("slot:home", "clicked", mid)
