"""A config with one on-site slot (``home``) whose variants follow the three
browsing styles, a segment rule and a tag rule on top (docs/ads.md)."""

from __future__ import annotations

from tests.channels.content_factories import catalog_products

SLOTS_YAML = """
  home:
    variants:
      - name: vip_deal
        when: {style: [search_driven, category_browser, promo_driven, undetermined],
               tags_any: [vip]}
        products: hot
        max_products: 1
        subject: "For our VIPs: ${product_name}"
        text: "${product_name} at ${currency}${product_price}"
      - name: champion_pick
        when: {style: [search_driven], segment: [champion]}
        products: trigger
        max_products: 1
        subject: "Reserved for you: ${product_name}"
        text: "${product_name}"
      - name: searcher
        when: {style: [search_driven]}
        products: trigger
        max_products: 1
        subject: "Still looking for ${query}?"
        text: "${product_name} is ${currency}${product_price}"
        html: "<p>You searched <b>${query}</b>: ${products}</p>"
      - name: new_in_category
        when: {style: [category_browser]}
        products: category
        max_products: 3
        subject: "New in ${category}"
        text: "${products}"
      - name: hot_deals
        when: {style: [promo_driven]}
        products: hot
        max_products: 2
        subject: "Hot deals"
        text: "${products}"
    fallback: {subject: "Picked for you", text: "Have a look around."}
    default: {subject: "Welcome", text: "Sign in for picks of your own."}
    max_age: 30s
"""


def config_text(prefix: str = "st:", extra: str = "") -> str:
    return f"""
scenes:
  promo_arrival: {{kind: arrival, when: {{page: {{prefix: /promo}}}}, per: page}}
delivery: {{redis_prefix: "{prefix}", tracking: {{allow_hosts: [shop.example.com]}}}}
slots:{SLOTS_YAML}{extra}"""


def hot_ids(limit: int, category: str | None) -> list[str]:
    """Discounted products, the visitor's category first, then by discount."""
    deals = sorted((p for p in catalog_products() if p.discount > 0),
                   key=lambda p: (p.discount, p.product_id), reverse=True)
    return [p.product_id for p in sorted(deals, key=lambda p: p.category != category)][:limit]


def category_ids(viewed: str, category: str, limit: int) -> list[str]:
    """The viewed product, then its category's new arrivals first."""
    rest = sorted((p for p in catalog_products()
                   if p.category == category and p.product_id != viewed),
                  key=lambda p: (p.is_new, p.product_id), reverse=True)
    return [viewed, *(p.product_id for p in rest)][:limit]
