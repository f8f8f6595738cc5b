"""Config of send-time optimisation (docs/timing.md, "Send-time optimisation"):
``send_time:`` on a scene or a journey's send step, and the settings under
``delivery.send_time``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import Duration, StrictModel

_HOUR_MS = 3_600_000
MAX_DELAY_MS = 7 * 24 * _HOUR_MS
# How long a message may wait for its best hour when max_delay is not given.
# A promo arrival fires while the shopper is on the site: never delayed.
# A cart reminder loses its moment within hours; a reactivation can wait a day.
DEFAULT_MAX_DELAY: dict[str, int] = {"arrival": 0, "absence": 3 * _HOUR_MS,
                                     "repeat": 3 * _HOUR_MS, "sequence": 3 * _HOUR_MS,
                                     "replenishment": 24 * _HOUR_MS, "date": 24 * _HOUR_MS,
                                     "journey": 24 * _HOUR_MS}
NEVER_DELAYED = frozenset({"arrival"})


class SendTimeModel(StrictModel):
    """``mode: best`` holds the message up to ``max_delay`` for the user's
    best hour; ``now`` (the default without this key) sends at once."""

    mode: Literal["best", "now"] = "best"
    max_delay: Duration | None = Field(default=None, ge=0, le=MAX_DELAY_MS)

    def delay_for(self, kind: str) -> int:
        """The longest hold (ms) for a scene of ``kind`` (or ``journey``)."""
        if self.mode == "now":
            return 0
        if self.max_delay is not None:
            return self.max_delay
        return DEFAULT_MAX_DELAY.get(kind, 3 * _HOUR_MS)

    def check_kind(self, kind: str) -> None:
        """A ``best`` send time on a kind that is never delayed is a config error."""
        if self.mode == "best" and kind in NEVER_DELAYED and self.max_delay != 0:
            raise ValueError(f"send_time mode best: an {kind} scene fires while the user is "
                             "on the site and is never delayed (drop send_time or use "
                             "mode: now)")


class SendTimeSettings(StrictModel):
    """``delivery.send_time``: the share sent at once as a holdout (by a hash of
    scene or strategy and user, salted), and when a curve is trusted."""

    holdout: float = Field(default=0.1, ge=0.0, le=1.0)
    salt: str = Field(default="send-time", max_length=100)
    min_events: int = Field(default=5, ge=1, le=10_000, strict=True)
    peak_ratio: float = Field(default=1.5, ge=1.0, le=100.0)
    # A user with fewer events borrows their style/segment group's curve once
    # this many requests of the group's users with enough events taught it.
    group_min_users: int = Field(default=3, ge=1, le=100_000, strict=True)


class SceneSendTime(StrictModel):
    """The ``send_time`` key every scene model carries (checked against its kind)."""

    send_time: SendTimeModel | None = None

    @model_validator(mode="after")
    def _kind_allows(self) -> SceneSendTime:
        kind = getattr(self, "kind", None)
        if self.send_time is not None and isinstance(kind, str):
            self.send_time.check_kind(kind)
        return self
