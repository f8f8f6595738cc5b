"""Factories for content, policy and pipeline tests: users with a given
browsing style and value segment, built by feeding real events to a Profile."""

from __future__ import annotations

from typing import Any

from channels.content.catalog import MemoryCatalog, Product
from triggers.events import Event
from triggers.state import UserState

# 2019-10-01 02:00 UTC = 10:00 in Shanghai (a Tuesday): outside quiet hours there.
T0 = 1_569_895_200_000
HOUR = 3_600_000
DAY = 86_400_000
PHONE = "1004659"
PHONES = "electronics.smartphone"


def catalog_products() -> list[Product]:
    return [
        Product(PHONE, "Galaxy A50", 19_999, "https://shop.example.com/p/1004659",
                "https://shop.example.com/i/1004659.jpg", PHONES, "samsung"),
        Product("2001", "Pixel New", 49_900, "https://shop.example.com/p/2001",
                "https://shop.example.com/i/2001.jpg", PHONES, "google", is_new=True),
        Product("2002", "Moto G", 15_000, "https://shop.example.com/p/2002", "", PHONES,
                "motorola"),
        Product("3001", "Kettle Deal", 2_500, "https://shop.example.com/p/3001", "",
                "appliances.kitchen.kettle", "bosch", discount=40),
        Product("3002", "Blender Deal", 5_500, "https://shop.example.com/p/3002", "",
                "appliances.kitchen.blender", "philips", discount=20),
    ]


def catalog() -> MemoryCatalog:
    return MemoryCatalog(catalog_products())


def _event(user: str, ts: int, etype: str, **fields: Any) -> Event:
    return Event(user, ts, etype, {"user_id": user, "ts": ts, "type": etype, **fields})


def user_state(user: str, style: str, segment: str = "new_or_lapsed", now: int = T0,
               tz: str | None = None) -> UserState:
    """A user whose profile classifies as ``style`` and ``segment`` at ``now``."""
    state = UserState()
    events: list[Event] = []
    ts = now - 10 * 60_000
    if style == "search_driven":
        events += [_event(user, ts + i, "search", query="galaxy a50") for i in range(4)]
        events += [_event(user, ts + 10 + i, "view", product_id=PHONE, category=PHONES)
                   for i in range(3)]
    elif style == "category_browser":
        events += [_event(user, ts + i, "page", page=f"/category/{PHONES}") for i in range(3)]
        events += [_event(user, ts + 10 + i, "view", product_id=PHONE, category=PHONES,
                          source="category") for i in range(3)]
    elif style == "promo_driven":
        events += [_event(user, ts + i, "page", page="/promo/autumn") for i in range(4)]
        events += [_event(user, ts + 10 + i, "view", product_id=PHONE, category=PHONES)
                   for i in range(3)]
    else:
        events += [_event(user, ts + i, "view", product_id=PHONE, category=PHONES)
                   for i in range(3)]
    purchases = {"new_or_lapsed": [], "promising": [50], "loyal": [120, 130],
                 "champion": [300, 200, 150]}[segment]
    for i, price in enumerate(purchases):
        events.append(_event(user, now - (i + 1) * DAY, "purchase", product_id="9",
                             price=str(price)))
    if tz is not None:
        events.append(_event(user, ts + 100, "page", page="/", tz=tz))
    for event in sorted(events, key=lambda e: e.ts):
        state.profile.update(event)
        state.max_ts = max(state.max_ts or event.ts, event.ts)
    return state
