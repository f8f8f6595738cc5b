"""The ``ads:`` section: which ad platforms the live audiences are synced to
(docs/ads.md, "Syncing to ad platforms"). Secrets are named by environment
variable, never written here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import Duration, StrictModel
from config.channel_models import RetryModel

ADS_CONSENT = "ads"  # the consent "channel type" of ad audiences (delivery.audience.consent)
SinkType = Literal["meta", "google_ads", "tiktok", "webhook"]
# What each type needs beyond ``audiences`` (the check names the missing field).
_NEEDS: dict[str, tuple[str, ...]] = {
    "meta": ("token_env",),
    "google_ads": ("token_env", "developer_token_env", "customer_id"),
    "tiktok": ("token_env", "advertiser_id"),
    "webhook": ("url", "secret_env"),
}


class AdsBatchModel(StrictModel):
    """A batch leaves when it holds ``max`` members or ``linger`` after its first."""

    max: int = Field(default=1_000, ge=1, le=10_000)  # Meta takes at most 10,000 a call
    linger: Duration = Field(default=5_000, ge=0)


class AdsRateModel(StrictModel):
    """Requests per second to one platform (a token bucket of ``burst``)."""

    per_second: float = Field(default=5.0, gt=0)
    burst: int = Field(default=5, ge=1)


class AdsSinkModel(StrictModel):
    type: SinkType
    # scenetrigger audience name -> the platform's audience (Meta custom
    # audience id, Google user list id, TikTok audience id; webhook: any label)
    audiences: dict[str, str] = Field(min_length=1)
    base_url: str | None = None  # the platform's documented default when unset
    token_env: str | None = None
    developer_token_env: str | None = None  # google_ads
    customer_id: str | None = None  # google_ads (digits, no dashes)
    login_customer_id: str | None = None  # google_ads, through a manager account
    advertiser_id: str | None = None  # tiktok
    url: str | None = None  # webhook
    secret_env: str | None = None  # webhook
    batch: AdsBatchModel = Field(default_factory=AdsBatchModel)
    rate: AdsRateModel = Field(default_factory=AdsRateModel)
    retry: RetryModel = Field(default_factory=lambda: RetryModel(max_attempts=6))

    @model_validator(mode="after")
    def _needs(self) -> AdsSinkModel:
        missing = [name for name in _NEEDS[self.type] if not getattr(self, name)]
        if missing:
            raise ValueError(f"a {self.type} sink needs {', '.join(missing)}")
        return self


class AdsModel(StrictModel):
    """``country_code``: the calling code put in front of a phone number kept
    without one (``+``/``00``-less), as the platforms want it; with none such
    a number is not sent. Consent for ads is the ``ads`` channel type's
    (``delivery.audience.consent.ads``: ``opt_in`` or ``opt_out``)."""

    country_code: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,2}$")
    # Members held out of every platform, per audience, by the control-group
    # hash (strategies.control.salt, name "ads:AUDIENCE"): the baseline of
    # `report --by channel`.
    holdout: float = Field(default=0.0, ge=0.0, le=0.5)
    sinks: dict[str, AdsSinkModel] = Field(default_factory=dict)
