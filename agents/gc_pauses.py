"""Short garbage-collection pauses for a long-running worker.

CPython's full collection (generation 2) scans every object the collector
tracks, with the event loop stopped. A worker holds millions of them (the
decoded user states of agents.partition_store's cache, Faust's and aiokafka's
own): measured at 1,000 events/s through the collector (bench/path.py), a
worker ran 10 full collections in its first minute, up to 330 ms of CPU each
(2.5 s of wall time on a loaded machine), every event and trigger in flight
waiting meanwhile: the p99 of the path was such a pause.

After each full collection its survivors, all reachable then, move to the
permanent generation (``gc.freeze``): later full collections scan only what
was allocated since. Frozen objects are still freed by reference counting
(an evicted user state goes at once); only garbage in a reference cycle
among them would wait. So once per ``full_every_s`` the frozen objects are
given back (``gc.unfreeze``) and the next full collection scans everything:
one long pause per period at most, and cyclic garbage kept that long at most.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

# Once per this many seconds a full collection scans every object.
FULL_EVERY_S = 600.0


class ShortGcPauses:
    """A ``gc.callbacks`` entry: freeze the survivors of each full collection."""

    def __init__(self, full_every_s: float = FULL_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every_s = full_every_s
        self._clock = clock
        self._since = clock()  # when everything was last given back

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = self._clock()
        if now - self._since >= self.full_every_s:
            self._since = now
            gc.unfreeze()  # the next full collection sees every object
        else:
            gc.freeze()


def keep_gc_pauses_short(full_every_s: float = FULL_EVERY_S) -> ShortGcPauses:
    """Install :class:`ShortGcPauses` for this process (once) and return it."""
    for callback in gc.callbacks:
        if isinstance(callback, ShortGcPauses):
            return callback
    policy = ShortGcPauses(full_every_s)
    gc.callbacks.append(policy)
    return policy
