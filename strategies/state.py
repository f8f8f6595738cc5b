"""Per-user journey state and its versioned byte encoding.

Journey positions must survive a worker restart, so the state is plain data
(step index, timestamps, the timer it waits on) encoded with orjson:
``[1, tags, opens, runs, exits]``, then ``audiences`` (the journey audiences
the user is in) when there are some. Stores mirror :mod:`triggers.state`: a
memory store that keeps live objects and a bytes store over any mapping
(a Faust table) that assigns a fresh value on every put.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from triggers.errors import StateDecodeError

JOURNEY_STATE_VERSION = 1
MAX_TAGS = 64
MAX_SENT_IDS = 16


class Run:
    """A user's position inside one strategy version."""

    __slots__ = ("control", "digest", "due_ms", "entered_ms", "sent", "seq", "step", "step_id",
                 "step_ms", "trigger_id", "version", "via")

    def __init__(self, version: int, digest: str, entered_ms: int, via: str,
                 trigger_id: str | None = None, control: bool = False) -> None:
        self.version = version
        self.digest = digest  # identifies the version across restarts
        self.step = 0
        self.step_id = ""  # the step's id, to move a run whose version is gone
        self.entered_ms = entered_ms
        self.step_ms = entered_ms  # when the current step started
        self.due_ms: int | None = None  # deadline of the wait or branch window
        self.seq = 0  # timer identity, to spot stale heap entries
        self.via = via
        self.trigger_id = trigger_id
        self.sent: list[str] = []  # recent message ids, to match feedback
        self.control = control

    def to_wire(self) -> list[Any]:
        return [self.version, self.digest, self.step, self.step_id, self.entered_ms, self.step_ms,
                self.due_ms, self.seq, self.via, self.trigger_id, self.sent, self.control]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Run:
        (version, digest, step, step_id, entered, step_ms, due, seq, via, trigger_id, sent,
         control) = wire
        run = cls(int(version), str(digest), int(entered), str(via), trigger_id, bool(control))
        run.step, run.step_id, run.step_ms, run.due_ms = int(step), str(step_id), step_ms, due
        run.seq, run.sent = int(seq), [str(m) for m in sent]
        return run


MAYBE_OTHERS = "*"  # in a user's journey audiences: some from before they were kept


class JourneyUser:
    """Everything the journey engine keeps for one user."""

    __slots__ = ("audience_steps", "audiences", "exits", "opens", "runs", "tags")

    def __init__(self) -> None:
        self.tags: set[str] = set()
        self.opens: dict[str, int] = {}  # channel -> opens seen (preferred-channel tag)
        self.runs: dict[str, Run] = {}
        self.exits: dict[str, int] = {}  # strategy -> last exit ts (reenter_after)
        # Journey audiences the user is in (its audience steps change only what
        # differs). None: not known, a state from before they were kept, so the
        # user may be in some: MAYBE_OTHERS stands for those in the set.
        self.audiences: set[str] | None = set()
        self.audience_steps = False  # one ran: kept even when the set is empty

    def encode(self) -> bytes:
        runs = {name: run.to_wire() for name, run in self.runs.items()}
        wire = [JOURNEY_STATE_VERSION, sorted(self.tags), self.opens, runs, self.exits]
        # Absent when no step ran: such states read as before (older readers too).
        if self.audiences is not None and (self.audiences or self.audience_steps):
            wire.append(sorted(self.audiences))
        return orjson.dumps(wire)

    @classmethod
    def decode(cls, data: bytes) -> JourneyUser:
        try:
            wire = orjson.loads(data)
            version = wire[0]
        except (orjson.JSONDecodeError, IndexError, TypeError, KeyError) as exc:
            raise StateDecodeError(f"unreadable journey state: {exc}") from None
        if version != JOURNEY_STATE_VERSION:
            raise StateDecodeError(f"journey state version {version!r} is not supported")
        try:
            _, tags, opens, runs, exits, *rest = wire
            if len(rest) > 1:
                raise ValueError(f"{len(wire)} fields")
            user = cls()
            user.tags = set(tags)
            user.opens = {str(k): int(v) for k, v in opens.items()}
            user.runs = {name: Run.from_wire(run) for name, run in runs.items()}
            user.exits = {str(k): int(v) for k, v in exits.items()}
            user.audiences = {str(a) for a in rest[0]} if rest else None
            user.audience_steps = bool(rest)
        except (ValueError, TypeError, AttributeError) as exc:
            raise StateDecodeError(f"malformed journey state: {exc}") from None
        return user


class JourneyStore(Protocol):
    def get(self, user_id: str) -> JourneyUser | None: ...

    def put(self, user_id: str, state: JourneyUser) -> None: ...

    def items(self) -> Iterator[tuple[str, JourneyUser]]: ...

    def __len__(self) -> int: ...


class MemoryJourneyStore:
    def __init__(self) -> None:
        self._users: dict[str, JourneyUser] = {}

    def get(self, user_id: str) -> JourneyUser | None:
        return self._users.get(user_id)

    def put(self, user_id: str, state: JourneyUser) -> None:
        self._users[user_id] = state

    def items(self) -> Iterator[tuple[str, JourneyUser]]:
        return iter(list(self._users.items()))

    def __len__(self) -> int:
        return len(self._users)


class BytesJourneyStore:
    """Over any mutable mapping user id -> bytes (a Faust table, a dict)."""

    def __init__(self, mapping: Any) -> None:
        self._mapping = mapping

    def get(self, user_id: str) -> JourneyUser | None:
        data = self._mapping.get(user_id)
        return None if data is None else JourneyUser.decode(data)

    def put(self, user_id: str, state: JourneyUser) -> None:
        self._mapping[user_id] = state.encode()

    def items(self) -> Iterator[tuple[str, JourneyUser]]:
        for user_id, data in list(self._mapping.items()):
            yield user_id, JourneyUser.decode(data)

    def __len__(self) -> int:
        return len(self._mapping)
