"""The sinks, routes and :class:`~channels.ads.sync.AudienceSync` a config's
``ads:`` section describes. Secrets come from the environment variables it
names. In a dry run every sink is a :class:`DryRunClient`: batches are
built (hashed, with their ids) and recorded, nothing is sent."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.ads.google import DEFAULT_BASE as GOOGLE_BASE
from channels.ads.google import GoogleAdsClient
from channels.ads.http import RateLimiter
from channels.ads.identifiers import Style
from channels.ads.meta import DEFAULT_BASE as META_BASE
from channels.ads.meta import MetaClient
from channels.ads.sink import AudienceSink, Batch, BatchingSink, PlatformClient
from channels.ads.state import RedisSyncState, SyncState
from channels.ads.sync import CHANNEL_TYPE, AdsConsentWatch, AudienceSync, Forget
from channels.ads.tiktok import DEFAULT_BASE as TIKTOK_BASE
from channels.ads.tiktok import TikTokClient
from channels.ads.webhook import AudienceWebhookClient
from channels.audience.consent import ConsentStore, RedisConsentStore
from channels.audience.directory import Contact, Directory, RedisDirectory
from channels.errors import ChannelError
from channels.transports.retry import Attempt, RetryPolicy
from config.ads_models import AdsSinkModel
from config.hash_keys import HashKeys
from config.models import AppConfig


class AdsConfigError(ChannelError):
    """An ``ads:`` sink that cannot be built (a secret missing from the environment)."""


@dataclass(slots=True)
class DryRunClient:
    style: Style
    sent: list[Batch] = field(default_factory=list)

    async def send(self, batch: Batch) -> Attempt:
        self.sent.append(batch)
        return Attempt(True, status=200)

    async def close(self) -> None:
        return None


def _secret(env: Mapping[str, str], sink: str, name: str | None) -> str:
    value = env.get(name or "")
    if not value:
        raise AdsConfigError(f"ads sink {sink!r}: ${name} is not set")
    return value


def client_for(name: str, model: AdsSinkModel, env: Mapping[str, str]) -> PlatformClient:
    if model.type == "meta":
        return MetaClient(_secret(env, name, model.token_env), model.base_url or META_BASE)
    if model.type == "google_ads":
        return GoogleAdsClient(_secret(env, name, model.token_env),
                               _secret(env, name, model.developer_token_env),
                               str(model.customer_id), model.login_customer_id,
                               model.base_url or GOOGLE_BASE)
    if model.type == "tiktok":
        return TikTokClient(_secret(env, name, model.token_env), str(model.advertiser_id),
                            model.base_url or TIKTOK_BASE)
    return AudienceWebhookClient(str(model.url), _secret(env, name, model.secret_env).encode())


def build_sinks(config: AppConfig, *, dry_run: bool = False,
                env: Mapping[str, str] | None = None, **sink_args: Any,
                ) -> dict[str, AudienceSink]:
    """``sink_args`` go to every :class:`BatchingSink` (tests pass a sleep)."""
    environ = os.environ if env is None else env
    out: dict[str, AudienceSink] = {}
    for name, model in config.ads.sinks.items():
        client = DryRunClient(model.type) if dry_run else client_for(name, model, environ)
        out[name] = BatchingSink(
            name, client, model.batch.max, model.batch.linger,
            RateLimiter(model.rate.per_second, model.rate.burst,
                        **({"sleep": sink_args["sleep"]} if "sleep" in sink_args else {})),
            RetryPolicy.of(model.retry), config.ads.country_code, **sink_args)
    return out


def routes(config: AppConfig) -> dict[str, dict[str, str]]:
    return {name: dict(model.audiences) for name, model in config.ads.sinks.items()}


def build_sync(config: AppConfig, directory: Directory, consent: ConsentStore,
               state: SyncState, *, dry_run: bool = False,
               env: Mapping[str, str] | None = None, **sink_args: Any) -> AudienceSync:
    default = config.delivery.audience.consent.get(CHANNEL_TYPE, "opt_out")
    return AudienceSync(build_sinks(config, dry_run=dry_run, env=env, **sink_args),
                        routes(config), directory, consent, state, default,
                        holdout=config.ads.holdout, salt=config.strategies.control.salt,
                        unchecked=frozenset(name for name, model in config.audiences.items()
                                            if model.consent == "none"))


def redis_forgetter(redis: Any, config: AppConfig, reason: str,
                    keys: HashKeys | None = None) -> Forget | None:
    """``forget(user, contact, now_ms)`` over the Redis directory, consent
    and sync state, for an erasure or an ads unsubscribe: the sinks are
    built for the call and closed after. None when no sink is configured.
    A sink that cannot be built (a secret missing) is in the receipt, and
    the removal is not complete."""
    if not config.ads.sinks:
        return None
    prefix = config.delivery.redis_prefix

    async def forget(user_id: str, contact: Contact | None, now_ms: int) -> dict[str, Any]:
        try:
            sync = build_sync(config, RedisDirectory(redis, prefix),
                              RedisConsentStore(redis, prefix, keys), RedisSyncState(redis, prefix))
        except AdsConfigError as exc:
            return {"reason": reason, "at_ms": now_ms, "complete": False, "error": str(exc)}
        sync.keys = keys
        try:
            return await sync.forget(user_id, reason, contact, now_ms)
        finally:
            await sync.close()

    return forget


def watch_ads_consent(consent: ConsentStore, redis: Any, config: AppConfig) -> ConsentStore:
    """``consent``, or with ads sinks configured, the same store whose ads
    withdrawals remove the user from every synced audience."""
    forget = redis_forgetter(redis, config, "ads_unsubscribe")
    return consent if forget is None else AdsConsentWatch(consent, forget)
