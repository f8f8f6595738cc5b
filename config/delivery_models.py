"""Pydantic models of the ``delivery:`` section: frequency caps, quiet hours,
dedupe, back-off and click/open tracking (see docs/content.md)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from config.base import Duration, StrictModel
from config.preference_models import PreferencesModel
from config.send_time_models import SendTimeSettings
from triggers.zones import ZONE_RULE, zone_or_none

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DAY_MS = 86_400_000



def valid_timezone(name: str) -> str:
    if zone_or_none(name) is None:  # e.g. "localtime": the host's zone, not the user's
        raise ValueError(f"unknown time zone {name!r} (use {ZONE_RULE})")
    return name


class CapModel(StrictModel):
    """Most messages per calendar day / ISO week in the user's time zone
    (``null``: no cap)."""

    per_day: int | None = Field(default=None, ge=0, strict=True)
    per_week: int | None = Field(default=None, ge=0, strict=True)


class QuietHoursModel(StrictModel):
    """Local ``start``-``end`` (may wrap midnight); messages are deferred to ``end``."""

    enabled: bool = True
    start: str = "22:00"
    end: str = "08:00"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"bad time of day {value!r}: use 'HH:MM' (00:00-23:59)")
        return value

    def minutes(self, value: str) -> int:
        hours, minutes = value.split(":")
        return int(hours) * 60 + int(minutes)


class BackoffModel(StrictModel):
    """After ``ignored`` deliveries in a row with no open or click, send at most
    one message per ``pause`` until the user engages again."""

    ignored: int = Field(default=5, ge=1, strict=True)
    pause: Duration = 7 * _DAY_MS


class TrackingModel(StrictModel):
    """Open pixel and click redirect. ``base_url`` unset: links are not rewritten.
    The signing secret comes from the environment variable named here."""

    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    secret_env: str = "SCENETRIGGER_TRACKING_SECRET"  # noqa: S105 - a variable name
    allow_hosts: list[str] = Field(default_factory=list)
    callback_token_env: str = "SCENETRIGGER_CALLBACK_TOKEN"  # noqa: S105 - a variable name


ConsentDefault = Literal["opt_in", "opt_out"]


class AudienceModel(StrictModel):
    """Consent defaults per channel type for marketing messages (``opt_out``:
    allowed until the user withdraws; ``opt_in``: only after the user agreed)
    over each type's own (``ChannelKind.default_consent``: SMS opt-in, the
    others opt-out), and the scenes whose messages are transactional (need
    no marketing consent, carry no unsubscribe link). See docs/audiences.md."""

    consent: dict[str, ConsentDefault] = Field(default_factory=dict)
    transactional_scenes: list[str] = Field(default_factory=list)


class DeliveryModel(StrictModel):
    default_timezone: str = "UTC"
    caps: CapModel = Field(default_factory=lambda: CapModel(per_day=3, per_week=10))
    channel_caps: dict[str, CapModel] = Field(default_factory=dict)
    quiet_hours: QuietHoursModel = Field(default_factory=QuietHoursModel)
    max_age: Duration = 12 * 3_600_000
    dedupe_ttl: Duration = 7 * _DAY_MS
    # A claimed delivery is pending for this long: a process that dies with
    # it in hand leaves it to be retried after the lease (docs/guarantees.md).
    # Longer than a send with all its retries takes.
    lease: Duration = Field(default=120_000, ge=1_000)
    lease_attempts: int = Field(default=5, ge=1, le=100)
    backoff: BackoffModel = Field(default_factory=BackoffModel)
    tracking: TrackingModel = Field(default_factory=TrackingModel)
    redis_prefix: str = Field(default="st:", max_length=64)
    audience: AudienceModel = Field(default_factory=AudienceModel)
    preferences: PreferencesModel = Field(default_factory=PreferencesModel)
    send_time: SendTimeSettings = Field(default_factory=SendTimeSettings)

    @field_validator("default_timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return valid_timezone(value)
