"""Durations: ``"<int><unit>"`` with unit ms, s, m, h, d, or an integer of milliseconds."""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
# ts + duration must stay a 64-bit integer: state is encoded with orjson.
MAX_DURATION_MS = (1 << 53) - 1


def parse_duration_ms(value: object) -> int:
    """Parse a duration into integer milliseconds, or raise ValueError saying why."""
    if isinstance(value, bool):
        raise ValueError("a duration must be '<int><unit>' or an integer of ms, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration cannot be negative (got {value})")
        return _bounded(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"bad duration {value!r}: use '<int><unit>' with unit ms, s, m, h or d, "
                "or an integer of milliseconds"
            )
        return _bounded(int(match.group(1)) * _UNIT_MS[match.group(2)])
    raise ValueError(
        f"a duration must be '<int><unit>' or an integer of ms, not {type(value).__name__}"
    )


def _bounded(ms: int) -> int:
    if ms > MAX_DURATION_MS:
        raise ValueError(f"a duration must be at most {MAX_DURATION_MS} ms (got {ms})")
    return ms


def format_duration_ms(ms: int) -> str:
    """The shortest exact spelling of a duration, for summaries."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
