"""Shared by the audience-sync tests: the four fake platforms running, a
config whose ``ads:`` sinks point at them, users with contact points, and
the hashes each platform should get, computed here with hashlib from the
platforms' documented normalisation (never through the project's code)."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from channels.audience.directory import Contact, MemoryDirectory
from config.ads_models import AdsModel
from config.loader import load_config
from config.models import AppConfig
from tests.adplatforms.base import FakePlatform, Row, Storm, running
from tests.adplatforms.google import FakeGoogle
from tests.adplatforms.meta import FakeMeta
from tests.adplatforms.tiktok import FakeTikTok
from tests.adplatforms.webhook import FakeHook

AUDIENCE = "viewed_no_buy"
PLATFORM_IDS = {"meta": "2385000001", "google": "555", "tiktok": "1700000001",
                "hook": "viewed_no_buy"}
ENV = {"META_TOKEN": "meta-token", "GOOGLE_TOKEN": "google-token", "GOOGLE_DEV": "dev-token",
       "TIKTOK_TOKEN": "tiktok-token", "HOOK_SECRET": "hook-secret"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def contact_of(n: int) -> Contact:
    """Mixed forms on purpose: spaces and capitals in emails, a +tag, phones
    with and without '+', a national one (country code 86 from the config)."""
    if n % 4 == 0:
        return Contact(f"u{n}", email=f" Shopper.{n}+ads@Example.COM ", phone=None)
    if n % 4 == 1:
        return Contact(f"u{n}", email=None, phone=f"+1 (650) 555-{n:04d}")
    if n % 4 == 2:
        return Contact(f"u{n}", email=f"buyer{n}@example.cn", phone=f"0138 0013 {n:04d}")
    return Contact(f"u{n}", email=f"Fan{n}@Example.org", phone=f"0044 20 7946 {n:04d}")


def _digits(phone: str) -> str:
    """Meta/TikTok: digits only, country code in front, no '+' nor leading zeros."""
    kept = "".join(ch for ch in phone if ch.isdigit() or ch == "+")
    if kept.startswith("+"):
        return kept[1:]
    if kept.startswith("00"):
        return kept[2:]
    return "86" + kept.lstrip("0")  # national: the configured country code


def expected_row(platform: str, contact: Contact) -> Row:
    email = phone = ""
    if contact.email is not None:
        text = contact.email.strip().lower()
        if platform == "tiktok":  # TikTok drops a +tag before the @
            local, domain = text.split("@")
            text = local.split("+")[0] + "@" + domain
        email = sha(text)
    if contact.phone is not None:
        digits = _digits(contact.phone)
        phone = sha("+" + digits if platform in ("google", "hook") else digits)
    return email, phone


def ads_config(platforms: Mapping[str, FakePlatform], batch_max: int = 10,
               attempts: int = 8) -> AppConfig:
    retry = {"max_attempts": attempts, "base_backoff": 1, "max_backoff": 5}
    common = {"batch": {"max": batch_max, "linger": 0},
              "rate": {"per_second": 1000, "burst": 50}, "retry": retry}
    sinks: dict[str, Any] = {
        "meta": {"type": "meta", "token_env": "META_TOKEN",
                 "base_url": platforms["meta"].base + "/v21.0"},
        "google": {"type": "google_ads", "token_env": "GOOGLE_TOKEN",
                   "developer_token_env": "GOOGLE_DEV", "customer_id": "1234567890",
                   "base_url": platforms["google"].base + "/v24"},
        "tiktok": {"type": "tiktok", "token_env": "TIKTOK_TOKEN",
                   "advertiser_id": "7000000000000000001",
                   "base_url": platforms["tiktok"].base + "/open_api/v1.3"},
        "hook": {"type": "webhook", "url": platforms["hook"].base + "/audiences",
                 "secret_env": "HOOK_SECRET"},
    }
    for name, sink in sinks.items():
        sink.update(common, audiences={AUDIENCE: PLATFORM_IDS[name]})
    ads = AdsModel.model_validate({"country_code": "86", "sinks": sinks})
    return load_config().model_copy(update={"ads": ads})


@dataclass
class Platforms:
    by_name: dict[str, FakePlatform]

    def members(self, name: str) -> set[Row]:
        return self.by_name[name].members.get(PLATFORM_IDS[name], set())


@asynccontextmanager
async def four_platforms(storm_rate: float = 0.0) -> AsyncIterator[Platforms]:
    made: dict[str, FakePlatform] = {
        "meta": FakeMeta(storm=Storm(storm_rate, seed=1)),
        "google": FakeGoogle(storm=Storm(storm_rate, seed=2)),
        "tiktok": FakeTikTok(storm=Storm(storm_rate, seed=3)),
        "hook": FakeHook(storm=Storm(storm_rate, seed=4))}
    async with AsyncExitStack() as stack:
        for platform in made.values():
            await stack.enter_async_context(running(platform))
        yield Platforms(made)


def directory_of(contacts: list[Contact]) -> MemoryDirectory:
    directory = MemoryDirectory()
    directory.users = {c.user_id: c for c in contacts}
    return directory


@contextmanager
def platforms_in_thread(storm_rate: float = 0.0) -> Iterator[Platforms]:
    """The four platforms served from a thread of their own, for tests that
    run the command line as a subprocess."""
    ready: queue.Queue[Platforms] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with four_platforms(storm_rate) as platforms:
            ready.put(platforms)
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)


def ads_yaml(platforms: Platforms, prefix: str = "st:", base_urls: bool = True) -> str:
    """The config a command reads: the sinks of :func:`ads_config` as YAML."""
    config = ads_config(platforms.by_name)
    sinks = {name: model.model_dump(exclude_none=True, exclude_defaults=False)
             for name, model in config.ads.sinks.items()}
    if not base_urls:
        for name, sink in sinks.items():
            sink.pop("base_url" if name != "hook" else "_", None)
    ads = {"country_code": "86", "sinks": sinks}
    return orjson.dumps({
        "scenes": {"promo_arrival": {"kind": "arrival", "when": {"page": {"prefix": "/promo"}},
                                     "per": "page"}},
        "delivery": {"redis_prefix": prefix}, "ads": ads}).decode()
