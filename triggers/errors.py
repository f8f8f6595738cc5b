"""The exception tree. Everything scenetrigger raises on purpose derives from one root."""

from __future__ import annotations


class SceneTriggerError(Exception):
    """Root of every error scenetrigger raises on purpose."""


class EventRejected(SceneTriggerError):
    """An input line or record that is not a valid event.

    ``reason`` is a short stable code (used as a metric label and in the
    dead-letter record); ``detail`` says what exactly was wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigError(SceneTriggerError):
    """A config that cannot be used. ``problems`` lists every error found,
    each naming the scene (or section) and the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class StateDecodeError(SceneTriggerError):
    """Stored per-user state that this version cannot read."""
