"""The decision log: one compact record per outcome after a trigger (sent,
failed, deferred, suppressed with the deciding rule and its figures), per
journey step and per feedback event, so that "why did user X (not) get it"
is a lookup rather than an investigation.

:class:`DecisionRecord` is the one model; the delivery pipeline writes one
for every :class:`channels.pipeline.Outcome` it returns. Where the records
go is a :class:`DecisionLog`: memory (bounded), a JSONL file (bounded by
size, one rotated generation kept) or a Kafka topic (bounded by the topic's
retention; ``agents``' side builds that one).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from channels.feedback import FeedbackEvent
from triggers.events import REFUSED_BUDGET, REFUSED_USER_FILTER, Refusal, Trigger

DEFAULT_MAX_RECORDS = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What was decided for one trigger (or journey send, or feedback event).

    ``outcome``: delivered, failed, deferred, suppressed; or a feedback kind
    (opened, clicked, ...). ``rule`` is the deciding rule (a suppression
    reason, ``quiet_hours``; None for a plain send) and ``figures`` the
    numbers behind it, e.g. ``3 of 3 sent today``.
    """

    ts: int  # decision time (ms; event time in a replay)
    user_id: str
    trigger_id: str
    scene: str  # a scene, or journey:<strategy> for a journey step
    outcome: str
    rule: str | None = None
    figures: str = ""
    channel: str | None = None
    variant: str | None = None
    message_id: str | None = None
    due_ms: int | None = None

    def text(self) -> str:
        """``cap_day: 3 of 3 sent today`` (or the outcome when no rule decided)."""
        head = self.rule if self.rule is not None else self.outcome
        return f"{head}: {self.figures}" if self.figures else head

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies (~13 us a record; the worker
        # writes one per trigger), and every field here is a str or an int.
        out = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value is not None and value != "":
                out[name] = value
        return out

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def decode(cls, data: bytes | str) -> DecisionRecord:
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a decision record is a JSON object")
        known = {k: raw[k] for k in cls.__slots__ if k in raw}
        return cls(**known)


def feedback_record(event: FeedbackEvent) -> DecisionRecord:
    """An open, click, provider receipt or unsubscribe as a record, under the
    message's id (the delivered record carries the same ``message_id``)."""
    scene = event.scene or (f"journey:{event.strategy}" if event.strategy else "")
    figures = f"message {event.message_id}" + (f": {event.detail}" if event.detail else "")
    return DecisionRecord(event.ts, event.user_id, event.message_id, scene, event.kind, None,
                          figures, event.channel or None, message_id=event.message_id)


OUTCOME_TRIGGERED = "triggered"  # the worker: a scene fired (rule: the scene's kind)
OUTCOME_REFUSED = "refused"  # the worker: the scene's user filter refused the fire
RULE_USER_FILTER = REFUSED_USER_FILTER
RULE_TRIGGER_BUDGET = REFUSED_BUDGET


def trigger_record(trigger: Trigger, kind: str, why: str) -> DecisionRecord:
    """A scene's fire as the worker decided it: the kind's rule and the
    figures explain prints (:func:`triggers.explain.fired_why`)."""
    return DecisionRecord(trigger.ts, trigger.user_id, trigger.trigger_id, trigger.scene,
                          OUTCOME_TRIGGERED, kind, why)


def refusal_record(refusal: Refusal) -> DecisionRecord:
    """A fire the scene's user filter (or the user's trigger budget:
    rule ``trigger_budget``) refused, under the id the trigger would have had."""
    would = Trigger(refusal.scene, refusal.user_id, refusal.key, refusal.ts)
    return DecisionRecord(refusal.ts, refusal.user_id, would.trigger_id, refusal.scene,
                          OUTCOME_REFUSED, refusal.rule, refusal.text())


class DecisionLog(Protocol):
    def write(self, record: DecisionRecord) -> None: ...


class MemoryDecisionLog:
    """The newest ``max_records`` records (embedded mode, tests, the console)."""

    def __init__(self, max_records: int | None = DEFAULT_MAX_RECORDS) -> None:
        self.records: deque[DecisionRecord] = deque(maxlen=max_records)

    def write(self, record: DecisionRecord) -> None:
        self.records.append(record)

    def for_user(self, user_id: str) -> list[DecisionRecord]:
        return [r for r in self.records if r.user_id == user_id]

    def erase(self, user_id: str) -> int:
        kept = [r for r in self.records if r.user_id != user_id]
        erased = len(self.records) - len(kept)
        self.records = deque(kept, maxlen=self.records.maxlen)
        return erased


class FileDecisionLog:
    """JSON lines appended to ``path``; past ``max_bytes`` the file moves to
    ``path.1`` (replacing the previous one), so at most twice that is kept."""

    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._file = self.path.open("ab")

    def write(self, record: DecisionRecord) -> None:
        self._file.write(record.encode() + b"\n")
        if self._file.tell() >= self.max_bytes:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = self.path.open("ab")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def erase(self, user_id: str) -> int:
        """Rewrite both generations without the user's records."""
        self._file.close()
        erased = 0
        for path in (self.path.with_name(self.path.name + ".1"), self.path):
            if not path.exists():
                continue
            kept = []
            for line in path.read_bytes().splitlines():
                if line and DecisionRecord.decode(line).user_id == user_id:
                    erased += 1
                else:
                    kept.append(line + b"\n")
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(b"".join(kept))
            os.replace(tmp, path)
        self._file = self.path.open("ab")
        return erased


def read_decisions(lines: Iterable[bytes]) -> Iterator[DecisionRecord]:
    for line in lines:
        if line.strip():
            yield DecisionRecord.decode(line)


def read_decision_file(path: str | Path) -> list[DecisionRecord]:
    """Both generations of a :class:`FileDecisionLog`, oldest first."""
    path = Path(path)
    out: list[DecisionRecord] = []
    for each in (path.with_name(path.name + ".1"), path):
        if each.exists():
            out += read_decisions(each.read_bytes().splitlines())
    return out
