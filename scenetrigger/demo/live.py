"""``scenetrigger demo --deliver live``: the demo's messages really leave the process.

The delivery pipeline runs in live mode on the config's ``channels:``
(``config/demo.yaml`` by default): the in-app inbox writes to Redis, and every
webhook channel that points at this machine is pointed at the demo's own
webhook sink (:mod:`scenetrigger.demo.webhook_sink`, ``POST /hook`` on a port of
its own), which checks each signature. The live page shows what the sink
received and a few users' inboxes as read back from Redis through
:class:`channels.transports.inbox.InboxStore`, not what the pipeline thinks it sent.

Policy state (dedupe claims, caps, quiet-hours deferrals) lives under a
prefix of its own per run: the simulated clock starts at the same time on
every run of a day, so a second run would otherwise find every trigger
claimed and every cap taken by the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from channels.assembly import open_delivery
from channels.audience.live_profile import DEFAULT_PREFIX as PROFILE_PREFIX
from channels.audience.live_profile import LiveProfileStore
from channels.content.catalog import MemoryCatalog
from channels.redis_client import DEFAULT_REDIS_URL, REDIS_URL_ENV, redis_client
from channels.transports.inbox import InboxChannel, InboxStore
from config.channel_models import ChannelModel, WebhookModel
from config.loader import DEFAULT_CONFIG_PATH
from config.models import AppConfig
from scenetrigger.demo.content import PipelineContent, demo_catalog, without_tracking
from scenetrigger.demo.webhook_sink import ServedSink, WebhookSink, serve_sink
from scenetrigger.runtime.embedded import EmbeddedRuntime, TriggerRecord
from scenetrigger.runtime.live_profiles import ProfileWriter
from triggers.errors import SceneTriggerError

log = logging.getLogger("scenetrigger.demo.live")

DEMO_LIVE_CONFIG = DEFAULT_CONFIG_PATH.with_name("demo.yaml")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
INBOX_USERS_SHOWN = 6
INBOX_MESSAGES_SHOWN = 4
WEBHOOK_SHOWN = 20
REFRESH_SECONDS = 1.0
_TEXT_SHOWN = 300


class RedisUnavailable(SceneTriggerError):
    """Live delivery needs Redis and it cannot be reached (exit status 2)."""


def redacted(url: str) -> str:
    """``url`` without a password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def is_local_webhook(model: ChannelModel) -> bool:
    return isinstance(model, WebhookModel) and urlsplit(model.url).hostname in LOCAL_HOSTS


async def connect_redis(url: str) -> Redis:
    """A client that has answered PING, or :class:`RedisUnavailable`."""
    try:
        client: Redis = redis_client(url, decode_responses=True, socket_connect_timeout=3,
                                     socket_timeout=10)
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {redacted(url)!r}: {exc}") from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise RedisUnavailable(f"cannot reach Redis at {redacted(url)}: {exc} "
                               "(start one with `make demo-live`, or pass --redis-url)") from None
    return client


class LiveDelivery:
    """The live pipeline's resources, the sink, and the page's delivery panel."""

    def __init__(self, config: AppConfig, client: Redis, redis_url: str,
                 sink: WebhookSink | None, served: ServedSink | None,
                 generated_secrets: list[str], run_prefix: str,
                 prom: CollectorRegistry, env: Mapping[str, str],
                 models: Mapping[str, ChannelModel]) -> None:
        self.client = client
        self.redis_url = redacted(redis_url)
        self.sink = sink
        self.served = served
        self.generated_secrets = generated_secrets
        self.run_prefix = run_prefix
        delivery = open_delivery(without_tracking(config), "live", metrics=prom,
                                 catalog=MemoryCatalog(demo_catalog()), env=env,
                                 redis_url=redis_url, redis=client, channels=models,
                                 policy_prefix=run_prefix, who="--deliver live")
        assert delivery.registry is not None  # live
        self.channels = delivery.registry
        self.delivery = delivery
        self.content = PipelineContent(delivery, owns=False)  # closed here, after the read-back
        self.inboxes: dict[str, InboxStore] = {
            name: channel.store for name, channel in self.channels.channels.items()
            if isinstance(channel, InboxChannel)}
        self.delivered: Counter[str] = Counter()  # per channel, as the pipeline reports
        self._inbox_users: OrderedDict[str, str] = OrderedDict()  # user -> inbox channel
        self._inbox_view: list[dict[str, Any]] = []
        self._persona: Callable[[str], str] = lambda _user: "unknown"
        self._task: asyncio.Task[None] | None = None
        self.profiles = ProfileWriter(LiveProfileStore(client))

    # -- wiring -----------------------------------------------------------------

    def attach(self, runtime: EmbeddedRuntime) -> None:
        """Count deliveries, show the panel, read inboxes back every second."""
        self._persona = runtime.persona
        runtime.subscribe(self._on_record)
        runtime.add_panel("delivery", self.panel)
        self.profiles.attach(runtime)  # the live profiles on-site slots read
        self._task = asyncio.create_task(self._refresh_loop(), name="demo-inbox-readback")

    def _on_record(self, record: TriggerRecord) -> None:
        for preview in record.content:
            if preview.status != "send":
                continue
            self.delivered[preview.channel] += 1
            if preview.channel in self.inboxes:
                user = record.trigger.user_id
                self._inbox_users[user] = preview.channel
                self._inbox_users.move_to_end(user, last=False)
                while len(self._inbox_users) > INBOX_USERS_SHOWN:
                    self._inbox_users.popitem()

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:  # shown as stale, the demo goes on
                log.warning("inbox read-back failed", extra={"error": str(exc)})
            except Exception:  # a read-back bug must not stop the demo either
                log.exception("inbox read-back failed")
            await asyncio.sleep(REFRESH_SECONDS)

    async def refresh(self) -> None:
        """Read the shown users' inboxes from Redis."""
        view = []
        for user, channel in list(self._inbox_users.items()):
            items = await self.inboxes[channel].list(user, unread_only=False,
                                                     limit=INBOX_MESSAGES_SHOWN)
            view.append({"user_id": user, "persona": self._persona(user), "channel": channel,
                         "messages": [brief(item.message) for item in items]})
        self._inbox_view = view

    # -- what the page and the console show -------------------------------------

    def panel(self) -> dict[str, Any]:
        webhook = None
        if self.sink is not None and self.served is not None:
            webhook = {
                "url": self.served.url, "received": self.sink.received,
                "rejected": self.sink.rejected, "duplicates": self.sink.duplicates,
                "recent": [{**brief(r.message), "received_ms": r.received_ms,
                            "persona": self._persona(str(r.message.get("user_id")))}
                           for r in list(self.sink.recent)[:WEBHOOK_SHOWN]],
            }
        return {"mode": "live", "redis": self.redis_url, "run_prefix": self.run_prefix,
                "delivered": dict(self.delivered), "webhook": webhook,
                "inbox": {"channels": list(self.inboxes), "users": self._inbox_view}}

    def banner_lines(self) -> list[str]:
        where = []
        for name in self.channels.names():
            if name in self.inboxes:
                where.append(f"{name} → Redis {self.redis_url}")
            elif self.served is not None and name in self._local_webhooks():
                where.append(f"{name} → {self.served.url} (demo sink, checks signatures)")
        lines = [f"  delivery    live: {'; '.join(where) or 'configured channels'}",
                 f"              policy state under {self.run_prefix} (dead letters: "
                 "scenetrigger:deadletter)",
                 f"  profiles    live: Redis {PROFILE_PREFIX}profile:{{user}} after each "
                 "tick (what serve's slots read)"]
        lines += [f"  webhook     ${var} is not set: generated a random secret for this run"
                  for var in self.generated_secrets]
        return lines

    def delivered_lines(self) -> list[str]:
        """Summary: messages delivered per channel (the pipeline's count)."""
        return [f"    {'→ ' + name:<26}{n:>8,}" for name, n in sorted(self.delivered.items())]

    def sink_lines(self) -> list[str]:
        """Summary: what the webhook sink took (its own count, over HTTP)."""
        if self.sink is None:
            return []
        return [f"  webhook sink   {self.sink.received:>8,}  received, signature verified "
                f"({self.sink.rejected:,} rejected, {self.sink.duplicates:,} duplicates)"]

    def _local_webhooks(self) -> set[str]:
        return {name for name, channel in self.channels.channels.items()
                if self.served is not None and getattr(channel, "url", None) == self.served.url}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.delivery.aclose()
        if self.served is not None:
            await self.served.runner.cleanup()
        await self.client.aclose()


def brief(message: Mapping[str, Any]) -> dict[str, Any]:
    """What the page shows of a delivered message (wire format, channels/transports/wire.py)."""
    raw = message.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    return {"message_id": message.get("message_id"), "trigger_id": message.get("trigger_id"),
            "user_id": message.get("user_id"), "scene": message.get("scene"),
            "channel": message.get("channel"), "subject": message.get("subject"),
            "text": str(message.get("text") or "")[:_TEXT_SHOWN],
            "variant": data.get("variant"), "style": data.get("style"),
            "segment": data.get("segment"), "created_ms": message.get("created_ms")}


async def start_live(config: AppConfig, prom: CollectorRegistry, *, redis_url: str | None,
                     host: str, webhook_port: int,
                     environ: Mapping[str, str] | None = None) -> LiveDelivery:
    """Connect Redis, start the webhook sink, build the live pipeline."""
    env = dict(os.environ if environ is None else environ)
    models = dict(config.channels)
    if not models:
        raise SceneTriggerError("--deliver live needs a 'channels:' section in the config "
                                f"(e.g. {DEMO_LIVE_CONFIG})")
    url = redis_url or env.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL
    client = await connect_redis(url)
    served: ServedSink | None = None
    try:
        local = [name for name, model in models.items() if is_local_webhook(model)]
        generated: list[str] = []
        sink_secrets: set[bytes] = set()
        for name in local:
            model = models[name]
            assert isinstance(model, WebhookModel)
            var = model.secret_env
            if var is not None and not env.get(var):
                env[var] = secrets.token_hex(32)
                generated.append(var)
            sink_secrets.add(env[var].encode() if var is not None else b"")
        sink = WebhookSink(sink_secrets) if local else None
        if sink is not None:
            try:
                served = await serve_sink(sink, host, webhook_port)
            except OSError as exc:
                hint = (" (try --webhook-port 0 for any free port)"
                        if exc.errno == errno.EADDRINUSE else "")
                raise SceneTriggerError(f"webhook sink cannot listen on {host}:{webhook_port}: "
                                        f"{exc.strerror or exc}{hint}") from None
            for name in local:
                models[name] = models[name].model_copy(update={"url": served.url})
        run_prefix = f"{config.delivery.redis_prefix}demo:{secrets.token_hex(4)}:"
        return LiveDelivery(config, client, url, sink, served, generated, run_prefix, prom,
                            env, models)
    except BaseException:
        if served is not None:
            await served.runner.cleanup()
        await client.aclose()
        raise
