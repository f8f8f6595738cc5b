"""Long-lived per-user profile aggregates, kept apart from scene windows so
pruning the windows can never drop them.

These feed content selection (browsing style, value segment) and tags
(time-of-day and weekday habits). Updating is pure: event in, profile changed.
"""

from __future__ import annotations

from typing import Any

from triggers.cycle import (
    CategoryStats,
    Stats,
    record_category,
    record_purchase,
    valid_categories,
    valid_stats,
)
from triggers.dates import ATTRIBUTES, take_attributes, valid_dates
from triggers.events import Event
from triggers.sendtime import Curve, curve_wire, engagement_kind, observe, valid_curve
from triggers.zones import is_zone_name, zone_or_none

PROMO_PAGE_PREFIX = "/promo"
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_MAX_PRICE_CENTS = 10**12  # one purchase; beyond it the price is bad input
_MAX_AMOUNT_CENTS = (1 << 53) - 1  # the running total saturates here
# Feedback the system writes about itself (channels.feedback.events): not the
# shopper's behaviour, so it must not move habits, activity or recency.
# Opens, clicks and shares are the shopper's own and count.
# A catalog scene's fan-out event (triggers.fanout) is the shop's, not the shopper's.
SYSTEM_EVENT_TYPES = frozenset({"delivered", "failed", "catalog_change"})


class Profile:
    """Counters a user accumulates over their whole history (bounded size)."""

    __slots__ = (
        "amount_cents",
        "category_views",
        "cats",
        "cycle",
        "dates",
        "engagement",
        "first_purchase_ts",
        "first_ts",
        "hours",
        "last_category",
        "last_product",
        "last_purchase_ts",
        "last_query",
        "last_ts",
        "locale",
        "promo_views",
        "purchases",
        "searches",
        "tz",
        "views",
        "weekday",
        "weekend",
    )

    def __init__(self) -> None:
        self.views = 0
        self.searches = 0
        self.category_views = 0
        self.promo_views = 0
        self.purchases = 0
        self.amount_cents = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.last_purchase_ts: int | None = None
        self.last_product: str | None = None
        self.last_query: str | None = None
        self.hours = [0] * 24  # activity by UTC hour of day
        self.weekday = 0
        self.weekend = 0
        # Appended after wire v1's first 14 fields (older wire lists lack them).
        self.last_category: str | None = None
        self.tz: str | None = None  # IANA zone name from an event's `tz` field
        self.locale: str | None = None  # language tag from an event's `locale` field
        # Purchase cycle (triggers.cycle): overall and per category (capped).
        self.cycle: Stats | None = None
        self.cats: dict[str, CategoryStats] = {}
        self.first_purchase_ts: int | None = None  # tenure, for the churn model
        self.engagement: Curve = {}  # by local hour of week (triggers.sendtime)
        self.dates: dict[str, str] = {}  # date attributes (triggers.dates)

    def update(self, event: Event) -> None:
        # Runs on every event: each field is looked up once.
        _, ts, etype, fields = event
        if etype in SYSTEM_EVENT_TYPES:
            return
        get = fields.get
        if etype == ATTRIBUTES:  # the directory's facts, not the shopper's behaviour
            take_attributes(self.dates, fields)
            tz = get("tz")
            if tz is not None and is_zone_name(tz):
                self.tz = tz
            return
        first_ts = self.first_ts
        if first_ts is None or ts < first_ts:
            self.first_ts = ts
        last_ts = self.last_ts
        if last_ts is None or ts > last_ts:
            self.last_ts = ts
        self.hours[(ts // _HOUR_MS) % 24] += 1
        # 1970-01-01 was a Thursday: day index 0 = Thursday, so 2 and 3 are Sat and Sun.
        if (ts // _DAY_MS) % 7 in (2, 3):
            self.weekend += 1
        else:
            self.weekday += 1
        category = get("category")
        if category and isinstance(category, str):
            self.last_category = category[:200]
        tz = get("tz")
        if tz is not None and is_zone_name(tz):  # "America" is a directory, not a zone
            self.tz = tz
        engaged = engagement_kind(etype, ts, last_ts)
        if engaged is not None:  # in the zone the events name (this one's too)
            observe(self.engagement, engaged, ts, zone_or_none(self.tz))
        locale = get("locale")
        if locale is not None and isinstance(locale, str) and 0 < len(locale) <= 35:
            self.locale = locale
        source = get("source")
        if etype == "view":
            self.views += 1
            product = get("product_id")
            if product is not None:
                self.last_product = str(product)[:200]
            if category is not None and source == "category":
                self.category_views += 1
        elif etype == "search":
            self.searches += 1
            query = get("query")
            if isinstance(query, str):
                self.last_query = query[:200]
        elif etype == "purchase":
            self.purchases += 1
            self.amount_cents = min(self.amount_cents + _price_cents(get("price")),
                                    _MAX_AMOUNT_CENTS)
            self.cycle = record_purchase(self.cycle, self.last_purchase_ts, ts)
            if category and isinstance(category, str):
                record_category(self.cats, category[:200], ts)
            if self.last_purchase_ts is None or ts > self.last_purchase_ts:
                self.last_purchase_ts = ts
            if self.first_purchase_ts is None or ts < self.first_purchase_ts:
                self.first_purchase_ts = ts
        page = get("page")
        on_promo_page = isinstance(page, str) and page.startswith(PROMO_PAGE_PREFIX)
        if on_promo_page or source == "promo":
            self.promo_views += 1
        elif etype == "page" and isinstance(page, str) and page.startswith("/category"):
            self.category_views += 1

    def to_wire(self) -> list[Any]:
        return [
            self.views,
            self.searches,
            self.category_views,
            self.promo_views,
            self.purchases,
            self.amount_cents,
            self.first_ts,
            self.last_ts,
            self.last_purchase_ts,
            self.last_product,
            self.last_query,
            self.hours,
            self.weekday,
            self.weekend,
            self.last_category,
            self.tz,
            self.locale,
            self.cycle,
            self.cats,
            self.first_purchase_ts,
            curve_wire(self.engagement),
            self.dates,
        ]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Profile:
        """Read a wire list; fields appended later may be missing (older writers)."""
        profile = cls()
        extra = wire[14:]
        wire = wire[:14]
        (
            profile.views,
            profile.searches,
            profile.category_views,
            profile.promo_views,
            profile.purchases,
            profile.amount_cents,
            profile.first_ts,
            profile.last_ts,
            profile.last_purchase_ts,
            profile.last_product,
            profile.last_query,
            profile.hours,
            profile.weekday,
            profile.weekend,
        ) = wire
        if len(extra) >= 1:
            profile.last_category = extra[0]
        if len(extra) >= 2:
            profile.tz = extra[1] if is_zone_name(extra[1]) else None
        if len(extra) >= 3:
            profile.locale = extra[2]
        if len(extra) >= 5:
            profile.cycle = valid_stats(extra[3])
            profile.cats = valid_categories(extra[4])
        if len(extra) >= 6 and type(extra[5]) is int:
            profile.first_purchase_ts = extra[5]
        if len(extra) >= 7:
            profile.engagement = valid_curve(extra[6])
        if len(extra) >= 8:
            profile.dates = valid_dates(extra[7])
        return profile


def _price_cents(value: Any) -> int:
    """Prices arrive as numbers or decimal strings; anything else (also NaN,
    infinity, a negative or absurd amount) counts as 0: bad input never stops
    the stream, and the encoded state stays within 64-bit integers."""
    if isinstance(value, bool) or value is None:
        return 0
    try:
        cents = round(float(value) * 100)
    except (TypeError, ValueError, OverflowError):
        return 0
    return cents if 0 < cents <= _MAX_PRICE_CENTS else 0
