"""Per-user engine state and its compact, versioned byte encoding.

In memory the state is a plain mutable object (fast for replay); stores that
persist it (Faust tables) encode it on every put, so a changelog sees a new
value assigned, never a mutation in place.

Wire format v2 (orjson): ``[2, max_ts, windows, timer, fires, profile,
budget]`` (the three slots of :mod:`triggers.kinds.base`, in that order) where timestamps inside windows and the trigger budget's times
(:mod:`triggers.budget`) are stored as ``max_ts - ts`` (small numbers).
Version 1 (no ``budget``) is still read. Version 3 appends the audiences'
data (:mod:`triggers.audiences.data`); it is written only for a user that
has some, so a config without ``audiences:`` writes version 2 as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from triggers.audiences.data import AudienceData
from triggers.errors import StateDecodeError
from triggers.profile import Profile

STATE_VERSION = 2
AUDIENCE_VERSION = 3  # with the audiences' data
_READABLE = (1, 2, 3)


class KeyWindow:
    """One repeat scene's window for one (user, per value): timestamps of
    ``when`` and ``unless`` events (sorted) and the newest fire time."""

    __slots__ = ("last_fire", "unless", "when")

    def __init__(self) -> None:
        self.when: list[int] = []
        self.unless: list[int] = []
        self.last_fire: int | None = None


class UserState:
    """Everything the engine keeps for one user."""

    __slots__ = ("audience", "budget", "fires", "max_ts", "profile", "timer", "windows")

    def __init__(self) -> None:
        self.max_ts: int | None = None
        # The slots kinds keep their state in, by scene name (triggers.kinds.base.Slot).
        self.windows: dict[str, dict[str, KeyWindow]] = {}  # scene -> key -> window
        self.timer: dict[str, tuple[int, int]] = {}  # scene -> (deadline, arm seq)
        self.fires: dict[str, dict[str, int]] = {}  # scene -> key -> newest fire ts
        self.profile = Profile()
        # The largest trigger times the budget counts (at most its count, sorted).
        self.budget: list[int] = []
        self.audience: AudienceData | None = None  # only with an `audiences:` config

    def encode(self) -> bytes:
        base = self.max_ts or 0
        windows = {
            scene: {
                key: [
                    [base - t for t in win.when],
                    [base - t for t in win.unless],
                    win.last_fire,
                ]
                for key, win in keys.items()
            }
            for scene, keys in self.windows.items()
            if keys
        }
        timer = {scene: list(armed) for scene, armed in self.timer.items()}
        fires = {scene: keys for scene, keys in self.fires.items() if keys}
        wire = [STATE_VERSION, self.max_ts, windows, timer, fires, self.profile.to_wire(),
                [base - t for t in self.budget]]
        audience = self.audience
        if audience is not None and not audience.empty:
            wire[0] = AUDIENCE_VERSION
            wire.append(audience.to_wire())
        return orjson.dumps(wire)

    @classmethod
    def decode(cls, data: bytes) -> UserState:
        try:
            wire = orjson.loads(data)
            version = wire[0]
        except (orjson.JSONDecodeError, IndexError, TypeError, KeyError) as exc:
            raise StateDecodeError(f"unreadable user state: {exc}") from None
        if version not in _READABLE:
            raise StateDecodeError(f"user state version {version!r} is not supported")
        try:
            return cls._from_wire(wire)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            raise StateDecodeError(f"malformed user state: {exc}") from None

    @classmethod
    def _from_wire(cls, wire: Any) -> UserState:
        _, max_ts, windows_of, timer, fires, profile, *budget = wire
        state = cls()
        state.max_ts = max_ts
        base = max_ts or 0
        for scene, keys in windows_of.items():
            windows: dict[str, KeyWindow] = {}
            for key, (when, unless, last_fire) in keys.items():
                win = KeyWindow()
                win.when = [base - d for d in when]
                win.unless = [base - d for d in unless]
                win.last_fire = last_fire
                windows[key] = win
            state.windows[scene] = windows
        state.timer = {scene: (armed[0], armed[1]) for scene, armed in timer.items()}
        state.fires = {scene: dict(keys) for scene, keys in fires.items()}
        state.profile = Profile.from_wire(profile)
        if budget:  # version 2 (and 3: the audiences' data after it)
            given, *audience = budget
            state.budget = [base - d for d in given]
            if audience:
                (data,) = audience
                state.audience = AudienceData.from_wire(data)
        return state


class StateStore(Protocol):
    """Where per-user state lives: one get and one put per event per user."""

    def get(self, user_id: str) -> UserState | None: ...

    def put(self, user_id: str, state: UserState) -> None: ...

    def delete(self, user_id: str) -> None:
        """Forget the user (an identified anonymous id, an erased user)."""

    def items(self) -> Iterator[tuple[str, UserState]]: ...

    def __len__(self) -> int: ...


class MemoryStore:
    """In-process store: keeps live objects, so a put of the same object is free."""

    def __init__(self) -> None:
        self._states: dict[str, UserState] = {}

    def get(self, user_id: str) -> UserState | None:
        return self._states.get(user_id)

    def put(self, user_id: str, state: UserState) -> None:
        self._states[user_id] = state

    def delete(self, user_id: str) -> None:
        self._states.pop(user_id, None)

    def items(self) -> Iterator[tuple[str, UserState]]:
        return iter(list(self._states.items()))

    def __len__(self) -> int:
        return len(self._states)


class BytesStore:
    """A store over any mutable mapping of user id -> bytes (a Faust table, a
    dict in tests): every put encodes and assigns a fresh value."""

    def __init__(self, mapping: Any) -> None:
        self._mapping = mapping

    def get(self, user_id: str) -> UserState | None:
        data = self._mapping.get(user_id)
        return None if data is None else UserState.decode(data)

    def put(self, user_id: str, state: UserState) -> None:
        self._mapping[user_id] = state.encode()

    def delete(self, user_id: str) -> None:
        self._mapping.pop(user_id, None)

    def items(self) -> Iterator[tuple[str, UserState]]:
        for user_id, data in list(self._mapping.items()):
            yield user_id, UserState.decode(data)

    def __len__(self) -> int:
        return len(self._mapping)
