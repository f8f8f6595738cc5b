"""The one place a delivery pipeline is put together, with what it owns.

:func:`open_delivery` builds content -> policy -> channel sender for a mode:

* ``dry-run``: the policy in memory, every message handed to one
  :class:`DryRunSender` (nothing leaves the process); the
  channels the content and strategies name count as available;
* ``live``: the config's ``channels:`` (secrets from ``env``), the policy,
  message index and dead letters in Redis, and the catalog in Redis unless
  one is given.

Every runtime takes this path: ``replay --deliver`` (through
:class:`channels.delivery_runtime.SyncDelivery`), ``scenetrigger deliver``,
and the demo (dry run and ``--deliver live``). What a runtime adds is only
its adapter: how triggers and orders reach :class:`Delivery.pipeline` and on
which clock. :meth:`Delivery.aclose` (or ``async with``) closes what was
opened here, in reverse order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from channels.audience.consent import RedisConsentStore
from channels.audience.directory import RedisDirectory
from channels.audience.recipient import Audience, OpenAudience, Rules
from channels.base import ChannelConfig, DeliveryResult, Message
from channels.content.catalog import Catalog, MemoryCatalog, RedisCatalog, read_products
from channels.content.select import ContentSelector
from channels.errors import ChannelError
from channels.feedback.events import FeedbackSink, MessageIndex, RedisMessageIndex
from channels.pipeline import DeliveryPipeline, Mode, Sender
from channels.policy.decide import DeliveryPolicy, PolicyMetrics
from channels.policy.send_time import SendTimer
from channels.policy.store import MemoryPolicyStore, PolicyStore, RedisPolicyStore
from channels.transports.deadletter import DEFAULT_STREAM, DeadLetterStore
from channels.transports.registry import (
    REDIS_URL_ENV,
    ChannelRegistry,
    ChannelSender,
    address_fields,
    build_registry,
    consent_defaults,
    redis_client,
    redis_url_or_env,
)
from config.channel_models import InboxModel
from config.models import AppConfig
from config.strategy_models import StrategyModel

if TYPE_CHECKING:
    from redis.asyncio import Redis

class DryRunSender:
    """The sender of every dry run (replay, the demo, tests): nothing leaves
    the process; the last ``keep`` messages are kept (all of them by default)."""

    dead_letter = None  # nothing fails here, nothing is kept for redrive

    def __init__(self, keep: int | None = None) -> None:
        self.messages: deque[Message] = deque(maxlen=keep)

    async def send(self, message: Message, channel: str | None = None, *,
                   dead_letter: bool = True) -> DeliveryResult:
        self.messages.append(message)
        return DeliveryResult(True, channel or message.channel, message.message_id)


def content_channels(config: AppConfig, journeys: Iterable[StrategyModel] = ()) -> list[str]:
    """Every channel named by a content variant or fallback (scenes, then
    journey content refs), then by a send step of ``journeys`` (default: the
    config's strategies), in first-seen order: the channels of a dry run."""
    names: dict[str, None] = {"inbox": None}
    content = config.content
    for scene in [*content.scenes.values(), *content.journeys.values()]:
        for variant in scene.variants:
            names.update(dict.fromkeys(variant.channels))
        names.update(dict.fromkeys(scene.fallback.channels))
    for strategy in [*config.strategies.all_journeys().values(), *journeys]:
        for step in strategy.steps:
            if step.send is not None:
                names.update(dict.fromkeys(step.send.channel_list()))
    return list(names)


def build_pipeline(config: AppConfig, mode: Mode, sender: Sender,
                   channels: Iterable[str] | None = None, catalog: Catalog | None = None,
                   store: PolicyStore | None = None, index: MessageIndex | None = None,
                   feedback: FeedbackSink | None = None, metrics_registry: Any = None,
                   env: Mapping[str, str] | None = None,
                   audience: Audience | None = None) -> DeliveryPipeline:
    """A pipeline from config. Without ``channels`` every channel the content
    names counts as available (right for dry runs); without ``audience`` an
    open one (:func:`open_audience`)."""
    delivery = config.delivery
    environ = os.environ if env is None else env
    metrics = PolicyMetrics.on(metrics_registry) if metrics_registry is not None else None
    policy = DeliveryPolicy(delivery, store if store is not None else MemoryPolicyStore(),
                            metrics)
    selector = ContentSelector(config.content, catalog if catalog is not None else MemoryCatalog(),
                               delivery.default_timezone)
    secret = environ.get(delivery.tracking.secret_env, "").encode()
    pipeline = DeliveryPipeline(selector, policy, sender,
                                list(channels) if channels is not None else content_channels(config),
                                mode, index=index, feedback=feedback,
                                tracking_base=delivery.tracking.base_url, tracking_secret=secret,
                                control=config.strategies.control,
                                audience=audience if audience is not None else open_audience(config))
    pipeline.send_timer = SendTimer.from_config(config)
    return pipeline


def open_audience(config: AppConfig) -> OpenAudience:
    """A dry run's audience: the events' locale and zone, else the config's defaults."""
    return OpenAudience(config.delivery.default_timezone, config.content.default_locale,
                        config.delivery.audience.transactional_scenes)


# Messages a dry run keeps for inspection (the demo and tests read them).
DRY_RUN_KEEP = 1_000


@dataclass(slots=True)
class Delivery:
    """A pipeline and what it was built on. ``registry`` and ``dead_letter``
    are the live channels and dead-letter stream (None in a dry run);
    ``dry_run`` is the dry run's sender (None live)."""

    pipeline: DeliveryPipeline
    registry: ChannelRegistry | None = None
    dead_letter: DeadLetterStore | None = None
    dry_run: DryRunSender | None = None
    _closers: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def aclose(self) -> None:
        await self._closers.aclose()

    async def __aenter__(self) -> Delivery:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def open_delivery(config: AppConfig, mode: Mode, *,
                  metrics: CollectorRegistry | None = None,
                  catalog: Catalog | None = None,
                  feedback: FeedbackSink | None = None,
                  env: Mapping[str, str] | None = None,
                  journeys: Iterable[StrategyModel] = (),
                  redis_url: str | None = None,
                  redis: Redis | None = None,
                  channels: Mapping[str, ChannelConfig] | None = None,
                  policy_prefix: str | None = None,
                  dead_letter_stream: str = DEFAULT_STREAM,
                  who: str = "live delivery") -> Delivery:
    """The pipeline for ``mode`` (see the module doc). Nothing is awaited
    here: connections open on first use, so a synchronous caller can build one.

    ``metrics``: the Prometheus registry (a private one by default);
    ``catalog``: products (default: none in a dry run, Redis live);
    ``env``: where secrets come from (tracking secret; live: channel secrets);
    ``journeys``: strategies whose send channels a dry run also offers.
    Live only: ``redis_url`` (a client is made and closed here) or ``redis``
    (the caller's, not closed); the inbox channels use ``redis_url`` too
    unless one names its own variable and that is set. ``channels`` replaces
    the config's section (the demo points local webhooks at its own sink);
    ``policy_prefix`` keeps caps, claims and deferrals apart (one demo run
    from the next); ``who`` names the caller in errors.
    """
    registry = metrics if metrics is not None else CollectorRegistry()
    environ = os.environ if env is None else env
    if mode == "dry-run":
        dry_run = DryRunSender(DRY_RUN_KEEP)
        pipeline = build_pipeline(config, mode, dry_run,
                                  channels=content_channels(config, journeys),
                                  catalog=catalog if catalog is not None else MemoryCatalog(),
                                  metrics_registry=registry, env=environ, feedback=feedback)
        return Delivery(pipeline, dry_run=dry_run)
    models: dict[str, ChannelConfig] = dict(config.channels if channels is None else channels)
    if not models:
        raise ChannelError(f"{who} needs a 'channels:' section in the config")
    url = redis_url_or_env(redis_url)
    tracking = config.delivery.tracking
    mail = [n for n, m in models.items() if getattr(m, "type", None) == "email"]
    if mail and not (tracking.base_url and environ.get(tracking.secret_env)):
        raise ChannelError(
            f"channel {mail[0]!r}: marketing email needs its unsubscribe link: set "
            f"delivery.tracking.base_url and ${tracking.secret_env}")
    # First what can refuse (a missing secret), then the clients: nothing is
    # connected yet, so a refusal leaves nothing to close.
    live_channels = build_registry(models, env=inbox_env(models, url, environ))
    closers = AsyncExitStack()  # closed last in, first out: the channels before Redis
    client: Any = redis
    if client is None:
        client = redis_client(url, decode_responses=True)
        closers.push_async_callback(client.aclose)
    closers.push_async_callback(live_channels.close)
    prefix = config.delivery.redis_prefix
    dead_letter = DeadLetterStore(client, dead_letter_stream)
    sender = ChannelSender(live_channels, dead_letter=dead_letter, metrics_registry=registry)
    policy_config = config
    if policy_prefix is not None:
        policy_config = config.model_copy(update={
            "delivery": config.delivery.model_copy(update={"redis_prefix": policy_prefix})})
    pipeline = build_pipeline(
        policy_config, mode, sender, channels=live_channels.names(),
        catalog=catalog if catalog is not None else RedisCatalog(client, f"{prefix}cat:"),
        store=RedisPolicyStore(client), index=RedisMessageIndex(client, prefix),
        feedback=feedback, metrics_registry=registry, env=environ,
        audience=build_audience(config, client, models))
    return Delivery(pipeline, live_channels, dead_letter, _closers=closers)


def build_audience(config: AppConfig, client: Any,
                   models: Mapping[str, ChannelConfig] | None = None) -> Audience:
    """Directory, consent and do-not-contact in Redis under ``delivery.redis_prefix``."""
    prefix = config.delivery.redis_prefix
    kinds = (config.channel_types() if models is None
             else {name: model.type for name, model in models.items()})
    return Audience(RedisDirectory(client, prefix), RedisConsentStore(client, prefix),
                    audience_rules(kinds, config.delivery.audience.consent),
                    config.delivery.audience.transactional_scenes,
                    config.delivery.default_timezone, config.content.default_locale)


def audience_rules(kinds: Mapping[str, str], overrides: Mapping[str, str] = {}) -> Rules:
    """What the audience needs of the channel kinds: ``kinds`` (channel name
    -> type), each type's consent default (``overrides``: the config's
    ``delivery.audience.consent``) and the directory field it sends to."""
    return Rules(dict(kinds), consent_defaults(overrides), address_fields())


def inbox_env(models: Mapping[str, Any], redis_url: str | None,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the channels are built with: ``--redis-url`` stands in
    for the default ``$SCENETRIGGER_REDIS_URL`` of inbox channels (a flag
    beats the environment) and for a channel's own variable when it is unset."""
    env = dict(os.environ if environ is None else environ)
    if redis_url:
        for model in models.values():
            if isinstance(model, InboxModel):
                var = model.redis_url_env
                if var == REDIS_URL_ENV or not env.get(var):
                    env[var] = redis_url
    return env


def file_catalog(path: str | None) -> Catalog | None:
    """``--catalog FILE`` as an in-memory catalog (None without a file)."""
    return MemoryCatalog(read_products(path)) if path else None
