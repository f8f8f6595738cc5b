"""Wall-clock time, for everything but the engine. The engine (``triggers``)
never reads a clock: time comes in as a parameter. Everything outside it that
needs "now" in epoch milliseconds asks here (the lowest layer above the
engine, so config, channels, strategies, agents and the commands all can):
one formula (integer nanoseconds, no float rounding)."""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Now, in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000
