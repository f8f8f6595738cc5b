"""Browsing style, value segment and habit tags for content selection.

The implementation lives in :mod:`triggers.classify` (pure, on the profile),
so the sans-I/O engine can use it for scene user filters; this module keeps
the names content selection imports. The rules are documented in
docs/content.md.
"""

from __future__ import annotations

from triggers.classify import (
    CATEGORY_BROWSER,
    CHAMPION,
    DAY_PARTS,
    LOYAL,
    NEW_OR_LAPSED,
    PROMISING,
    PROMO_DRIVEN,
    SEARCH_DRIVEN,
    UNDETERMINED,
    Segmentation,
    browsing_style,
    classify,
    habit_tags,
    utc_offset_hours,
    value_segment,
)

__all__ = [
    "CATEGORY_BROWSER",
    "CHAMPION",
    "DAY_PARTS",
    "LOYAL",
    "NEW_OR_LAPSED",
    "PROMISING",
    "PROMO_DRIVEN",
    "SEARCH_DRIVEN",
    "UNDETERMINED",
    "Segmentation",
    "browsing_style",
    "classify",
    "habit_tags",
    "utc_offset_hours",
    "value_segment",
]
