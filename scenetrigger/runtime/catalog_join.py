"""The catalog join in the embedded runtimes: replay (``--catalog-changes``)
and tests run the catalog side (:class:`triggers.fanout.CatalogSide`) in
line with the events, without Kafka, with the semantics the worker's
catalog side has (docs/catalog.md, docs/semantics-notes.md "Catalog scenes").

A catalog history is JSONL, one record per line with the time it took
effect: ``{"ts": 1569888000000, "record": {"v": 1, "product_id": ...}}``.
Its records are merged into the events by time: a record at ``ts`` applies
after every event read before the first event whose ``ts`` is later, and
its fan-out events follow it (all stamped ``ts``). A line that does not
decode stops the run with its line number and reason: the history is a file
the operator gives, nothing is skipped silently.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from config.models import AppConfig
from triggers.catalog import CatalogRecord, catalog_record_from_mapping
from triggers.errors import EventRejected, SceneTriggerError
from triggers.events import DEFAULT_MAX_ID_CHARS, Event
from triggers.fanout import CatalogSide
from triggers.host import Record
from triggers.interest import InterestBook


@dataclass(frozen=True, slots=True)
class Timed:
    number: int  # its line in the history
    ts: int
    record: CatalogRecord


def read_history(lines: Iterable[bytes], max_id_chars: int = DEFAULT_MAX_ID_CHARS
                 ) -> list[Timed]:
    """Every line of a catalog history, in time order (stable: equal times
    keep their order), or :class:`SceneTriggerError` naming the bad line."""
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SceneTriggerError(f"catalog history line {number}: not JSON: {exc}") from None
        if not isinstance(obj, dict) or set(obj) != {"ts", "record"} or type(obj["ts"]) is not int:
            raise SceneTriggerError(f"catalog history line {number}: expected "
                                    '{"ts": <ms>, "record": {...}}')
        try:
            record = catalog_record_from_mapping(obj["record"], max_id_chars)
        except EventRejected as exc:
            raise SceneTriggerError(f"catalog history line {number}: {exc.reason}: "
                                    f"{exc.detail}") from None
        out.append(Timed(number, obj["ts"], record))
    out.sort(key=lambda timed: timed.ts)
    return out


def new_side(config: AppConfig) -> CatalogSide:
    return CatalogSide(config.scene_list(), InterestBook(config.catalog_interest.rules()))


def catalog_join(config: AppConfig) -> CatalogJoin | None:
    """The demo's join: none when the config has no catalog scene."""
    side = new_side(config)
    return CatalogJoin(side) if side.scenes else None


def fanout_events(side: CatalogSide, timed: Timed) -> list[Event]:
    """A record's fan-out, its new arrivals' included, as events."""
    events, arrivals = side.on_record(timed.record, timed.ts)
    for change in arrivals:
        events += side.on_category_change(change, timed.ts)
    return [as_event(e) for e in events]


def as_event(obj: dict[str, Any]) -> Event:
    return Event(obj["user_id"], obj["ts"], obj["type"], obj)


class CatalogJoin:
    """The catalog side and the records still to apply, in time order: the
    history given up front and records added while running (the demo's
    ``POST /api/catalog``). Replay and the embedded runtime both drive it:
    :meth:`before` the fan-out of every record due before an event's time,
    :meth:`observe` each event's interest."""

    def __init__(self, side: CatalogSide, history: Iterable[Timed] = ()) -> None:
        self.side = side
        self._pending = list(history)
        self._index = 0
        self.applied = 0  # records applied

    def add(self, record: CatalogRecord, ts: int, number: int = 0) -> None:
        """One more record at ``ts``, after those already due at that time."""
        insort(self._pending, Timed(number, ts, record), lo=self._index, key=_ts)

    def before(self, ts: int | None) -> Iterator[tuple[int, Event]]:
        """The fan-out (with the record's line number) of every record whose
        time is before ``ts`` (None: every record left)."""
        pending = self._pending
        while self._index < len(pending) and (ts is None or pending[self._index].ts < ts):
            timed = pending[self._index]
            self._index += 1
            self.applied += 1
            for event in fanout_events(self.side, timed):
                yield timed.number, event

    def observe(self, event: Event) -> None:
        self.side.observe(event.user_id, event.ts, event.fields)


def _ts(timed: Timed) -> int:
    return timed.ts


def joined(records: Iterable[Record], history: list[Timed], side: CatalogSide
           ) -> Iterator[Record]:
    """The records with the history merged in by time (see the module doc);
    the events also feed the side's interest. Fan-out events carry the
    history's line number."""
    join = CatalogJoin(side, history)
    for number, item in records:
        if type(item) is Event:
            yield from join.before(item.ts)
            join.observe(item)
        yield number, item
    yield from join.before(None)
