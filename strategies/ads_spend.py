"""Ad spend kept in Redis (``scenetrigger audiences import-spend``), read by
``scenetrigger report --by channel`` when no ``--spend FILE`` is given
(docs/ads.md, "Return per channel").

One hash, ``{prefix}ads-spend``: a field per (sink, audience, day), its
amount and currency. One key is one cluster slot, so an import is one
``HSET``: all of a file's rows land together or none do. An import
replaces the days it names (a file's rows for the same day and audience are
summed first), so importing a corrected export again does not count twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from strategies.ads_roi import Spend
from triggers.errors import SceneTriggerError


def spend_key(prefix: str) -> str:
    return f"{prefix}ads-spend"


def merge_days(rows: Iterable[Spend]) -> dict[tuple[str, str, str], Spend]:
    """The rows by (sink, audience, day), amounts of the same day summed; one
    currency per day (else an error naming it)."""
    days: dict[tuple[str, str, str], Spend] = {}
    for row in rows:
        key = (row.channel, row.audience, row.day)
        seen = days.get(key)
        if seen is None:
            days[key] = row
            continue
        if seen.currency != row.currency:
            raise SceneTriggerError(f"{row.channel} {row.audience} {row.day}: spend in both "
                                    f"{seen.currency or '(none)'} and {row.currency or '(none)'}")
        days[key] = Spend(row.channel, row.day, row.audience, seen.spend + row.spend,
                          row.currency)
    return days


class RedisSpendStore:
    def __init__(self, redis: Any, prefix: str) -> None:
        self._redis = redis
        self._key = spend_key(prefix)

    async def put(self, rows: Iterable[Spend]) -> int:
        """Store the rows' days (replacing those days); how many were written."""
        days = merge_days(rows)
        if not days:
            return 0
        await self._redis.hset(self._key, mapping={
            orjson.dumps(list(key)): orjson.dumps({"amount": s.spend, "currency": s.currency})
            for key, s in days.items()})
        return len(days)

    async def all(self) -> list[Spend]:
        raw = await self._redis.hgetall(self._key)
        rows = []
        for field, value in raw.items():
            channel, audience, day = orjson.loads(field)
            data = orjson.loads(value)
            rows.append(Spend(channel, day, audience, float(data["amount"]), data["currency"]))
        return sorted(rows, key=lambda s: (s.channel, s.audience, s.day))
