"""Keeps the cyclic garbage collector off the worker's user states.

The partition stores cache hundreds of thousands of decoded user states
(each a handful of lists, dicts and slotted objects) that live for minutes
and hold no reference cycles. CPython's collector re-scans all of them at
every full collection, and while the cache grows that is often: on the
``timers`` workload of ``bench/peer.py`` the collector took ~20 % of the
worker's CPU. After each settle :meth:`HeapFreezer.settled` (and every
:data:`GROWTH` new states in a long batch, :meth:`HeapFreezer.grew`) moves
every object alive into the permanent generation (``gc.freeze``: a few list
splices), so collections scan only what was allocated since.

Frozen objects are still freed by reference counting; only garbage in a
reference cycle (Faust's and aiokafka's futures, exceptions with
tracebacks) would stay. So every ``rescan_s`` the heap is unfrozen and the
freezing waits until the collector's next full collection has run on its
own schedule: such garbage lives at most that long, and the full scan costs
what it costs today, once per ``rescan_s`` instead of every few seconds.
(The same idea as replay's, ``scenetrigger.runtime.replay``, for a process
that never ends.)

The process's one freezer (:func:`process_heap`) is also a ``gc.callbacks``
entry: after each full collection its survivors are frozen too, so a
process without a settle (``fanout``) or a worker between settles keeps
full collections short (measured at 1,000 events/s through the collector: a
full collection of the state cache took up to 330 ms of CPU, 2.5 s of wall
time on a loaded machine, with the event loop stopped).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

RESCAN_S = 300.0
# New states cached between freezes when a batch runs long (the agent's batch
# can hold 20,000 events before it settles): as often as replay freezes.
GROWTH = 1_024


class HeapFreezer:
    """One per worker process; the stores call :meth:`settled` after each flush."""

    def __init__(self, rescan_s: float = RESCAN_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rescan_s = rescan_s
        self._clock = clock
        self._unfrozen_at = clock()
        self._full_before: int | None = None  # full collections seen at the last unfreeze
        self._grown = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` entry: a full collection just ended."""
        if phase == "stop" and info.get("generation") == 2:
            self.settled()

    def grew(self) -> None:
        """A store cached one more state: freeze every :data:`GROWTH` of them."""
        self._grown += 1
        if self._grown >= GROWTH:
            self.settled()

    def settled(self) -> None:
        self._grown = 0
        if not gc.isenabled():
            return
        if self._full_before is not None:  # rescanning: wait for a full collection
            if _full_collections() == self._full_before:
                return
            self._full_before = None
        now = self._clock()
        if now - self._unfrozen_at >= self._rescan_s:
            gc.unfreeze()
            self._unfrozen_at = now
            self._full_before = _full_collections()
            return
        gc.freeze()


_PROCESS: HeapFreezer | None = None


def process_heap() -> HeapFreezer:
    """This process's freezer (the partition stores call it after settles)."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = HeapFreezer()
    return _PROCESS


def freeze_after_full_collections() -> HeapFreezer:
    """Also run :func:`process_heap`'s freezer after each full collection
    (``gc.callbacks``, once): the worker and fan-out processes. Not in a
    test process: freezing there hides objects from ``gc.get_referrers``."""
    heap = process_heap()
    if heap not in gc.callbacks:
        gc.callbacks.append(heap)
    return heap


def _full_collections() -> int:
    collections: int = gc.get_stats()[2]["collections"]
    return collections
