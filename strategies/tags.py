"""Rule-based behaviour tags, computed purely from a user's profile.

Browsing style, value segment and the time-of-day / weekday-weekend habit
come from :mod:`triggers.classify` (one implementation, shared with content
selection and scene user filters); this module turns them into tags and adds the preferred channel
from the opens a user made:

* ``tod:<night|morning|afternoon|evening>``, ``weekday`` / ``weekend``
  (habit rules of ``content.habits``),
* ``style:<search_driven|category_browser|promo_driven|undetermined>``,
* ``segment:<champion|loyal|promising|new_or_lapsed>``,
* ``worktime``, ``cycle:<weekly|monthly|quarterly|long>`` (habits, docs/timing.md),
* ``prefers_<channel>``: the channel with the most opens, with at least
  ``strategies.tags.min_opens`` of them (ties: the name first in order),
* ``churn_risk_high`` / ``churned``: the churn model's P(active) (a
  purchase within ``horizon_days``) below ``strategies.tags.churn``
  thresholds (triggers/churn.py). ``churned`` is
  sticky: the model adds it, only a tag step removes it (winback does on a
  purchase), so a strategy that set it keeps it.

Behaviour tags are *derived*: they are recomputed and replaced as a set.
Tags that strategies set (``churned``, ``prefers_wechat`` from a branch) are
*sticky* and only change by a tag step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from config.content_models import ContentModel
from config.strategy_models import TagRulesModel
from triggers.churn import CHURN_RISK_HIGH, CHURNED, p_active
from triggers.classify import (
    CYCLE_TAG,
    SEGMENT_TAG,
    STYLE_TAG,
    TAG_GROUPS,
    TOD_TAG,
    behaviour_tag_set,
    classify,
)
from triggers.profile import Profile

DERIVED_PREFIXES = (TOD_TAG, STYLE_TAG, SEGMENT_TAG, CYCLE_TAG)
DERIVED_NAMES = TAG_GROUPS["week"] | TAG_GROUPS["work"] | {CHURN_RISK_HIGH}


def is_derived(tag: str) -> bool:
    return tag in DERIVED_NAMES or tag.startswith(DERIVED_PREFIXES)


def preferred_channel_tag(opens: Mapping[str, int], min_opens: int) -> str | None:
    best = sorted(opens.items(), key=lambda kv: (-kv[1], kv[0]))
    if not best or best[0][1] < min_opens:
        return None
    return f"prefers_{best[0][0]}"


def behaviour_tags(profile: Profile | None, content: ContentModel, now_ms: int,
                   default_tz: str | None = None) -> frozenset[str]:
    """The derived tags of one user at ``now_ms`` (explicit time)."""
    seg = classify(profile, content.styles, content.segments, content.habits, now_ms,
                   default_tz)
    return behaviour_tag_set(seg)


def all_tags(profile: Profile | None, content: ContentModel, rules: TagRulesModel, now_ms: int,
             opens: Mapping[str, int] | None = None,
             default_tz: str | None = None) -> frozenset[str]:
    tags = set(behaviour_tags(profile, content, now_ms, default_tz))
    pref = preferred_channel_tag(opens or {}, rules.min_opens)
    if pref is not None:
        tags.add(pref)
    tags.update(churn_tags(profile, rules, now_ms))
    return frozenset(tags)


def churn_tags(profile: Profile | None, rules: TagRulesModel, now_ms: int) -> frozenset[str]:
    """``churn_risk_high`` (and ``churned``) when P(active) is below the thresholds."""
    churn = rules.churn
    active = None if profile is None else p_active(profile, churn.model(), now_ms,
                                                   churn.horizon_days)
    if active is None or active >= churn.risk_high_below:
        return frozenset()
    return frozenset({CHURN_RISK_HIGH, CHURNED} if active < churn.churned_below
                     else {CHURN_RISK_HIGH})


def replace_derived(current: Iterable[str], derived: Iterable[str]) -> tuple[set[str], set[str]]:
    """What to add and remove so the derived part of ``current`` becomes
    ``derived`` while sticky tags stay: ``(add, remove)``."""
    have = set(current)
    want = set(derived)
    remove = {t for t in have if is_derived(t) and t not in want}
    return want - have, remove
