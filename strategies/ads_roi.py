"""Return on ad spend per channel (ad sink) and audience: ``scenetrigger
report --by channel`` (docs/ads.md, "Return per channel").

Members come from the membership records (replay output ``"kind":
"audience"`` lines); the audience's holdout (``ads.holdout``, never synced:
:func:`channels.ads.sync.held_out`) is the baseline. A member converts when
they purchase within the attribution window after they first entered. Per
(sink, audience): reach (members synced: not held out), conversions in both
arms, the uplift with its Newcombe 95 % interval on users, the incremental
conversions it implies (uplift x reach) and the cost per incremental
conversion, from the spend for that sink and audience (CSV or JSON:
``platform``, ``day``, ``audience``, ``amount``, ``currency``, or
``channel``, ``day``, ``audience``, ``spend``; a file, or what ``scenetrigger
audiences import-spend`` stored: :mod:`strategies.ads_spend`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import orjson

from channels.ads.sync import held_out
from strategies.attribution import newcombe_interval
from triggers.audiences.record import AudienceChange
from triggers.errors import SceneTriggerError
from triggers.events import Event

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
SPEND_FIELDS = ("channel", "day", "audience", "spend")
# What ``audiences import-spend`` documents: the platform (the sink's name),
# the amount and its ISO 4217 currency. --spend FILE reads either shape.
IMPORT_FIELDS = ("platform", "day", "audience", "amount", "currency")
MAX_ERRORS = 20  # bad rows listed in one error


@dataclass(frozen=True, slots=True)
class Spend:
    channel: str
    day: str
    audience: str
    spend: float
    currency: str = ""  # "" when the file did not say (the SPEND_FIELDS shape)


def read_spend(name: str, data: bytes) -> list[Spend]:
    """:func:`read_spend_lines` without the line numbers."""
    return [item for _number, item in read_spend_lines(name, data)]


def read_spend_lines(name: str, data: bytes) -> list[tuple[int, Spend]]:
    """CSV with a header, a JSON array or JSON lines of {channel, day,
    audience, spend} or {platform, day, audience, amount, currency}. Every
    bad row is reported (line and field) and nothing is returned then."""
    text = data.decode("utf-8-sig")
    stripped = text.lstrip()
    rows: list[tuple[int, Any]]
    if stripped.startswith("["):
        try:
            rows = list(enumerate(orjson.loads(stripped), 1))
        except orjson.JSONDecodeError as exc:
            raise SceneTriggerError(f"{name}: not JSON: {exc}") from None
    elif stripped.startswith("{"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, orjson.loads(line)))
                except orjson.JSONDecodeError as exc:
                    raise SceneTriggerError(f"{name}:{number}: not JSON: {exc}") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(number, row) for number, row in enumerate(reader, 2)]
    found: list[tuple[int, Spend]] = []
    errors: list[str] = []
    for number, row in rows:
        item = _spend(row)
        if isinstance(item, Spend):
            found.append((number, item))
        else:
            errors.append(f"{name}:{number}: {item}")
    if errors:
        more = f"\n(and {len(errors) - MAX_ERRORS} more bad rows)" if len(errors) > MAX_ERRORS \
            else ""
        raise SceneTriggerError("\n".join(errors[:MAX_ERRORS]) + more)
    return found


def _spend(row: Any) -> Spend | str:
    """The row, or what is wrong with it (its first bad field)."""
    if isinstance(row, Mapping) and set(row) == set(IMPORT_FIELDS):
        names = {"channel": "platform", "spend": "amount"}
    elif isinstance(row, Mapping) and set(row) == set(SPEND_FIELDS):
        names = {}
    else:
        return (f"want exactly {', '.join(IMPORT_FIELDS)} "
                f"(or {', '.join(SPEND_FIELDS)})")
    channel, day, audience = (str(row[names.get(k, k)]).strip()
                              for k in ("channel", "day", "audience"))
    field = names.get("spend", "spend")
    value = row[field]
    try:
        amount = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        return f"{field}: not a number"
    currency = str(row["currency"]).strip() if "currency" in row else ""
    for bad, what in ((not channel, f"{names.get('channel', 'channel')}: empty"),
                      (not _is_day(day), "day: want a date YYYY-MM-DD"),
                      (not audience, "audience: empty"),
                      (not (0 <= amount < float("inf")), f"{field}: want a number >= 0"),
                      ("currency" in row and not _CURRENCY.match(currency),
                       "currency: want an ISO 4217 code (EUR, USD, ...)")):
        if bad:
            return what
    return Spend(channel, day, audience, amount, currency)


def _is_day(day: str) -> bool:
    try:
        return bool(_DAY.match(day)) and date.fromisoformat(day) is not None
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ChannelRow:
    channel: str
    audience: str
    members: int
    reach: int  # synced: not held out
    holdout: int
    conversions: int
    holdout_conversions: int
    uplift: float | None
    uplift_low: float | None
    uplift_high: float | None
    incremental: float | None
    incremental_low: float | None
    incremental_high: float | None
    spend: float
    cost_per_incremental: float | None
    cost_low: float | None
    cost_high: float | None  # None: unbounded (the interval reaches no gain)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def channel_report(routes: Mapping[str, Mapping[str, str]], records: Iterable[AudienceChange],
                   events: Iterable[Event], spend: Iterable[Spend], *, holdout: float,
                   salt: str, window_ms: int) -> list[ChannelRow]:
    entered: dict[str, dict[str, int]] = {}  # audience -> user -> first enter, ms
    for record in records:
        if record.op == "enter":
            users = entered.setdefault(record.audience, {})
            ts = int(record.ts * 1000)
            users[record.user_id] = min(ts, users.get(record.user_id, ts))
    purchases: dict[str, list[int]] = {}
    for event in events:
        if event.type == "purchase":
            purchases.setdefault(event.user_id, []).append(event.ts)
    costs: dict[tuple[str, str], float] = {}
    currencies: dict[tuple[str, str], str] = {}
    for item in spend:
        key = (item.channel, item.audience)
        costs[key] = costs.get(key, 0.0) + item.spend
        if item.currency and currencies.setdefault(key, item.currency) != item.currency:
            raise SceneTriggerError(f"spend of {key[0]} {key[1]} in both {currencies[key]} "
                                    f"and {item.currency}: one currency per sink and audience")
    rows = []
    for channel, audiences in sorted(routes.items()):
        for audience in sorted(audiences):
            rows.append(_row(channel, audience, entered.get(audience, {}), purchases,
                             costs.get((channel, audience), 0.0), holdout, salt, window_ms))
    return rows


def _row(channel: str, audience: str, members: Mapping[str, int],
         purchases: Mapping[str, list[int]], cost: float, holdout: float, salt: str,
         window_ms: int) -> ChannelRow:
    n_t = x_t = n_c = x_c = 0
    for user, since in members.items():
        converted = any(since <= ts <= since + window_ms for ts in purchases.get(user, ()))
        if held_out(salt, holdout, audience, user):
            n_c, x_c = n_c + 1, x_c + converted
        else:
            n_t, x_t = n_t + 1, x_t + converted
    uplift = low = high = None
    if n_t and n_c:
        uplift = x_t / n_t - x_c / n_c
        low, high = newcombe_interval(x_t, n_t, x_c, n_c)
    incremental = None if uplift is None else uplift * n_t
    inc_low = None if low is None else low * n_t
    inc_high = None if high is None else high * n_t
    per = cost / incremental if incremental is not None and incremental > 0 else None
    cost_low = cost / inc_high if inc_high is not None and inc_high > 0 else None
    cost_high = cost / inc_low if inc_low is not None and inc_low > 0 else None
    return ChannelRow(channel, audience, len(members), n_t, n_c, x_t, x_c, uplift, low, high,
                      incremental, inc_low, inc_high, cost, per, cost_low, cost_high)


def channel_json(rows: Iterable[ChannelRow], *, holdout: float,
                 window_ms: int) -> dict[str, Any]:
    """``report --by channel --json``'s document (the console's /api/channels too)."""
    return {"by": "channel", "window_ms": window_ms, "holdout": holdout,
            "intervals": "Newcombe hybrid score, 95 %, on users",
            "rows": [row.to_dict() for row in rows]}


def render_channels(rows: Iterable[ChannelRow]) -> str:
    def num(value: float | None, fmt: str = "{:.2f}") -> str:
        return "-" if value is None else fmt.format(value)

    out = [f"{'channel':<10} {'audience':<18} {'reach':>7} {'holdout':>7} {'conv':>6} "
           f"{'h.conv':>6} {'incremental [95%]':>26} {'spend':>10} {'cost/incr. [95%]':>28}"]
    for r in rows:
        incr = f"{num(r.incremental, '{:.1f}')} [{num(r.incremental_low, '{:.1f}')}, " \
               f"{num(r.incremental_high, '{:.1f}')}]"
        cost = f"{num(r.cost_per_incremental)} [{num(r.cost_low)}, " \
               f"{num(r.cost_high) if r.cost_high is not None else 'inf'}]"
        out.append(f"{r.channel:<10} {r.audience:<18} {r.reach:>7} {r.holdout:>7} "
                   f"{r.conversions:>6} {r.holdout_conversions:>6} {incr:>26} "
                   f"{r.spend:>10.2f} {cost:>28}")
    return "\n".join(out)
