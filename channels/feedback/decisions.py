"""The decision log: one compact record per outcome after a trigger (sent,
failed, deferred, suppressed with the deciding rule and its figures), per
journey step and per feedback event, so that "why did user X (not) get it"
is a lookup rather than an investigation.

:class:`DecisionRecord` is the one model; the delivery pipeline writes one
for every :class:`channels.pipeline.Outcome` it returns. Where the records
go is a :class:`DecisionLog`: memory (bounded), a JSONL file (bounded by
size, one rotated generation kept) or a Kafka topic (bounded by the topic's
retention; ``agents``' side builds that one).

Every process writes this one model and every reader (``explain``, the
console, ``report``) reads every kind: sends, suppressions, journey steps,
feedback, consent changes, erasures, the worker's fires and refusals. Its
wire form carries ``v`` (:data:`VERSION`). Version rules: a new field is
optional with a default; a reader ignores fields it does not know (a newer
writer's records still read); a field's meaning never changes (a new one is
added instead). Version 1 (no ``v``) had serve's consent records without
``trigger_id`` and ``scene``: they read with those empty.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from channels.feedback.events import FeedbackEvent
from triggers.events import REFUSED_BUDGET, REFUSED_USER_FILTER, Refusal, Trigger

VERSION = 2
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
    source: str | None = None  # a consent change's: unsubscribe_link, one_click, sms_reply, ...
    purpose: str | None = None  # a consent change's: marketing, transactional
    v: int = VERSION

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
        """Any version's record (see the module's rules); ValueError when it is none."""
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a decision record is a JSON object")
        known = {k: raw[k] for k in cls.__slots__ if k in raw}
        known.setdefault("v", 1)
        known.setdefault("trigger_id", "")
        known.setdefault("scene", "")
        for name, kind in _TYPES.items():
            if not isinstance(known.get(name), kind) or isinstance(known.get(name), bool):
                raise ValueError(f"a decision record's {name!r} must be "
                                 f"{'an integer' if kind is int else 'a string'}")
        return cls(**known)


_TYPES: dict[str, type] = {"ts": int, "user_id": str, "trigger_id": str, "scene": str,
                           "outcome": str, "v": int}
CONSENT = "consent"  # the scene of a consent change's record (it belongs to no message)
ERASED = "erased"  # the outcome of an erasure's record
# How a consent change came, as explain says it (the stored source: docs/audiences.md).
HOW = {"unsubscribe_link": "the link's page", "one_click": "a one-click POST (RFC 8058)",
       "sms_reply": "an SMS reply (STOP/TD)", "wechat_event": "a WeChat unfollow",
       "preference_centre": "the preference centre"}


def feedback_record(event: FeedbackEvent) -> DecisionRecord:
    """An open, click, provider receipt or unsubscribe as a record, under the
    message's id (the delivered record carries the same ``message_id``). A
    consent change (no message) is scene :data:`CONSENT` under its own id,
    with its channel type, purpose and source."""
    if not event.message_id:
        channel = event.channel or "all"
        return DecisionRecord(event.ts, event.user_id, f"consent:{channel}:{event.ts}", CONSENT,
                              event.kind, None, HOW.get(event.source, event.source),
                              event.channel or None, source=event.source,
                              purpose=event.detail or None)
    scene = event.scene or (f"journey:{event.strategy}" if event.strategy else "") or (
        f"slot:{event.slot}" if event.slot else "")  # an on-site slot's impression or click
    figures = f"message {event.message_id}" + (f": {event.detail}" if event.detail else "")
    return DecisionRecord(event.ts, event.user_id, event.message_id, scene, event.kind, None,
                          figures, event.channel or None, message_id=event.message_id)


def erasure_record(user_id: str, ts: int, source: str) -> DecisionRecord:
    """The user's erasure (its time; readers drop the user's records before it)."""
    return DecisionRecord(ts, user_id, f"erase:{ts}", CONSENT, ERASED, None,
                          "the user's data was erased", source=source)


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


def tally(records: Iterable[DecisionRecord]) -> dict[str, Any]:
    """What ``report --decisions`` prints: records per scene (``consent``,
    ``journey:NAME``) and outcome (a rule after a colon: ``suppressed:cap_day``),
    each consent change by channel type and source, and the versions read."""
    scenes: dict[str, dict[str, int]] = {}
    consent: dict[str, int] = {}
    versions: dict[str, int] = {}
    total = 0
    for record in records:
        total += 1
        outcome = record.outcome + (f":{record.rule}" if record.rule else "")
        per = scenes.setdefault(record.scene or "-", {})
        per[outcome] = per.get(outcome, 0) + 1
        if record.scene == CONSENT and record.outcome != ERASED:
            what = f"{record.outcome} {record.channel or '-'} via {record.source or '-'}"
            consent[what] = consent.get(what, 0) + 1
        versions[str(record.v)] = versions.get(str(record.v), 0) + 1
    return {"records": total, "versions": dict(sorted(versions.items())),
            "scenes": {s: dict(sorted(c.items())) for s, c in sorted(scenes.items())},
            "consent": dict(sorted(consent.items()))}


def read_decision_file(path: str | Path) -> list[DecisionRecord]:
    """Both generations of a :class:`FileDecisionLog`, oldest first."""
    path = Path(path)
    out: list[DecisionRecord] = []
    for each in (path.with_name(path.name + ".1"), path):
        if each.exists():
            out += read_decisions(each.read_bytes().splitlines())
    return out
