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


def fanout_events(side: CatalogSide, timed: Timed) -> list[Event]:
    """A record's fan-out, its new arrivals' included, as events."""
    events, arrivals = side.on_record(timed.record, timed.ts)
    for change in arrivals:
        events += side.on_category_change(change, timed.ts)
    return [as_event(e) for e in events]


def as_event(obj: dict[str, Any]) -> Event:
    return Event(obj["user_id"], obj["ts"], obj["type"], obj)


def joined(records: Iterable[Record], history: list[Timed], side: CatalogSide
           ) -> Iterator[Record]:
    """The records with the history merged in by time (see the module doc);
    the events also feed the side's interest. Fan-out events carry the
    history's line number."""
    index, total = 0, len(history)
    for number, item in records:
        if type(item) is Event:
            ts = item.ts
            while index < total and history[index].ts < ts:
                timed = history[index]
                index += 1
                for event in fanout_events(side, timed):
                    yield timed.number, event
            side.observe(item.user_id, ts, item.fields)
        yield number, item
    for timed in history[index:]:
        for event in fanout_events(side, timed):
            yield timed.number, event
