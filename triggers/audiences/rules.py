"""An audience's conditions and their evaluation at a time (pure).

Membership is a function of the user's state and the clock: every stated
condition must hold at ``now_ms``. Each condition also says when, with no
new event, it could next change (a window running out, a segment lapsing,
a decaying lead score crossing a bound), so the tracker re-evaluates a user
exactly then (:func:`next_change`). Conditions (docs/ads.md, "Audiences"):

* ``fired``: one of the scenes fired at ``f`` with ``f <= now < f + within``;
* ``purchase.within`` / ``purchase.none_within``: the last purchase ``p`` has
  ``p <= now < p + within`` (bought recently) / has not (never, or longer
  ago: "did not buy");
* ``tags``, ``style``, ``segment``: the behaviour classification of
  :mod:`triggers.classify` with the ``content:`` thresholds (the segment
  lapses at ``p + lapse_after + 1``). Habit tags follow the zone's current
  offset; a daylight-saving switch is seen at the next evaluation;
* ``lead_score``: the score from the scoring model's event points with its
  half-life decay (:func:`decayed`), within ``[min, max]``;
* ``locale``: the profile's locale is one of them or a sub-tag of one
  (``de`` holds ``de-AT``), case-insensitive.

``consent`` (the ``ads`` purpose) is not evaluated here: the engine does no
I/O. It is a flag the ad sinks check before they add a member.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from triggers.audiences.data import AudienceData
from triggers.classify import SEGMENT_TAG, STYLE_TAG, browsing_style, habit_tags, value_segment
from triggers.durations import format_duration_ms
from triggers.profile import Profile
from triggers.tagcondition import TagCondition
from triggers.userfilter import ClassifyRules

_MAX_STEPS = 64  # nudges of a computed crossing time to the exact millisecond


@dataclass(frozen=True, slots=True)
class Scoring:
    """The lead score the audiences read: points per event type, half-life."""

    points: Mapping[str, float] = field(default_factory=dict)
    half_life_ms: int = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Audience:
    """One named audience. ``journey``: no conditions, members only by
    journey steps (never evaluated here). ``consent``: the purpose the ad
    sinks must find granted (None: no check)."""

    name: str
    fired: frozenset[str] = frozenset()
    fired_within_ms: int = 0
    bought_within_ms: int | None = None
    none_bought_within_ms: int | None = None
    tags: TagCondition | None = None
    styles: frozenset[str] | None = None
    segments: frozenset[str] | None = None
    score_min: float | None = None
    score_max: float | None = None
    locales: frozenset[str] | None = None
    consent: str | None = "ads"
    journey: bool = False

    @property
    def reads_score(self) -> bool:
        return self.score_min is not None or self.score_max is not None

    def describe(self) -> str:
        """The conditions in words (``check-config``)."""
        if self.journey:
            parts = ["journey steps only"]
        else:
            parts = []
            if self.fired:
                parts.append(f"fired {' or '.join(sorted(self.fired))} within "
                             f"{format_duration_ms(self.fired_within_ms)}")
            if self.bought_within_ms is not None:
                parts.append(f"bought within {format_duration_ms(self.bought_within_ms)}")
            if self.none_bought_within_ms is not None:
                parts.append(f"no purchase within {format_duration_ms(self.none_bought_within_ms)}")
            for label, values in (("style", self.styles), ("segment", self.segments),
                                  ("locale", self.locales)):
                if values is not None:
                    parts.append(f"{label} {'|'.join(sorted(values))}")
            if self.tags is not None:
                parts.append(f"tags {','.join(sorted(self.tags.names))}")
            if self.reads_score:
                low = "" if self.score_min is None else f"{self.score_min:g} <= "
                high = "" if self.score_max is None else f" <= {self.score_max:g}"
                parts.append(f"{low}lead score{high}")
        parts.append(f"consent {self.consent}" if self.consent else "no consent check")
        return "; ".join(parts)


def decayed(value: float, at_ms: int, now_ms: int, half_life_ms: int) -> float:
    """A score of ``value`` set at ``at_ms``, read at ``now_ms`` (never above
    its stored value for a later read). The one decay rule: the strategies'
    lead scorer reads it too."""
    elapsed = now_ms - at_ms
    if elapsed <= 0:
        return value
    return float(value * 2.0 ** (-elapsed / half_life_ms))


def add_points(score: tuple[float, int] | None, delta: float, ts: int,
               half_life_ms: int) -> tuple[tuple[float, int], float]:
    """``(new (value, at), value before)`` after adding ``delta`` at ``ts``:
    decayed to ``ts`` first; a late event's points arrive already decayed to
    the stored time. Never below zero."""
    value, at = score if score is not None else (0.0, ts)
    if ts >= at:
        before = decayed(value, at, ts, half_life_ms)
        return (max(0.0, before + delta), ts), before
    added = delta * 2.0 ** (-(at - ts) / half_life_ms)
    return (max(0.0, value + added), at), value


def _locale_holds(locale: str | None, wanted: frozenset[str]) -> bool:
    if not locale:
        return False
    low = locale.lower()
    return any(low == w or low.startswith(w + "-") for w in wanted)


def holds(audience: Audience, profile: Profile, data: AudienceData | None, rules: ClassifyRules,
          scoring: Scoring, now_ms: int) -> bool:
    """Whether the user is in ``audience`` at ``now_ms``."""
    if audience.journey:
        return False
    if audience.fired:
        last = data.last_fire(audience.fired) if data is not None else None
        if last is None or not last <= now_ms < last + audience.fired_within_ms:
            return False
    p = profile.last_purchase_ts
    recent = p is not None and p <= now_ms
    if audience.bought_within_ms is not None and not (
            recent and now_ms < p + audience.bought_within_ms):  # type: ignore[operator]
        return False
    if audience.none_bought_within_ms is not None and (
            recent and now_ms < p + audience.none_bought_within_ms):  # type: ignore[operator]
        return False
    if audience.locales is not None and not _locale_holds(profile.locale, audience.locales):
        return False
    if audience.styles is not None and browsing_style(profile, rules.styles) not in audience.styles:
        return False
    segment = None
    if audience.segments is not None:
        segment = value_segment(profile, rules.segments, now_ms)
        if segment not in audience.segments:
            return False
    if audience.tags is not None:
        tags = set(habit_tags(profile, rules.habits, now_ms, rules.default_tz))
        tags.add(STYLE_TAG + browsing_style(profile, rules.styles))
        tags.add(SEGMENT_TAG + (segment or value_segment(profile, rules.segments, now_ms)))
        if not audience.tags.holds(tags):
            return False
    if audience.reads_score:
        score = data.score if data is not None else None
        value = 0.0 if score is None else decayed(score[0], score[1], now_ms, scoring.half_life_ms)
        if audience.score_min is not None and value < audience.score_min:
            return False
        if audience.score_max is not None and value > audience.score_max:
            return False
    return True


def next_change(audience: Audience, profile: Profile, data: AudienceData | None,
                rules: ClassifyRules, scoring: Scoring, now_ms: int) -> int | None:
    """The earliest time after ``now_ms`` at which a condition of ``audience``
    may change with no new event (None: none can)."""
    if audience.journey:
        return None
    times: list[int] = []
    if audience.fired and data is not None:
        last = data.last_fire(audience.fired)
        if last is not None:
            times += [last, last + audience.fired_within_ms]
    p = profile.last_purchase_ts
    if p is not None:
        for within in (audience.bought_within_ms, audience.none_bought_within_ms):
            if within is not None:
                times += [p, p + within]
        if audience.segments is not None or audience.tags is not None:
            times.append(p + rules.segments.lapse_after + 1)
    if audience.reads_score and data is not None and data.score is not None:
        value, at = data.score
        for bound, below in ((audience.score_min, True), (audience.score_max, False)):
            if bound is not None:
                crossing = _crossing(value, at, bound, below, scoring.half_life_ms, now_ms)
                if crossing is not None:
                    times.append(crossing)
    later = [t for t in times if t > now_ms]
    return min(later) if later else None


def _crossing(value: float, at: int, bound: float, below: bool, half_life_ms: int,
              now_ms: int) -> int | None:
    """The first ms after ``now_ms`` at which the decaying score is below
    ``bound`` (``below``) or at most ``bound`` (not ``below``); None if it
    already is or never will be (a zero bound)."""
    def crossed(t: int) -> bool:
        score = decayed(value, at, t, half_life_ms)
        return score < bound if below else score <= bound

    if crossed(now_ms) or bound <= 0:
        return None
    guess = at + max(0, int(half_life_ms * math.log2(value / bound)))
    t = max(guess, now_ms + 1)
    for _ in range(_MAX_STEPS):  # float rounding: step to the exact first ms
        if crossed(t):
            break
        t += 1
    else:
        return t  # re-evaluated then; the next change is computed again
    while t - 1 > now_ms and crossed(t - 1):
        t -= 1
    return t
