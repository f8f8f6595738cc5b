"""What every fake platform shares: a catch-all aiohttp app on a free
loopback port, a throttle (a seeded storm of 429s and the platform's own
rate-limit answers), the request log and the audience membership it keeps."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

HEX64 = re.compile(r"^[0-9a-f]{64}$")
Row = tuple[str, str]  # (email hash or "", phone hash or "")


@dataclass
class Storm:
    """Throttle ``rate`` of requests (seeded), or the first ``first`` ones."""

    rate: float = 0.0
    first: int = 0
    seed: int = 7
    rng: random.Random = field(init=False)
    throttled: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def hit(self) -> bool:
        if self.first > 0:
            self.first -= 1
        elif not (self.rate and self.rng.random() < self.rate):
            return False
        self.throttled += 1
        return True


@dataclass
class FakePlatform:
    storm: Storm = field(default_factory=Storm)
    requests: list[dict[str, Any]] = field(default_factory=list)  # method, path, headers, body
    members: dict[str, set[Row]] = field(default_factory=dict)  # audience -> rows in it
    added: dict[str, list[Row]] = field(default_factory=dict)  # every row accepted, by audience
    removed: dict[str, list[Row]] = field(default_factory=dict)
    base: str = ""

    def apply(self, audience: str, op: str, rows: list[Row]) -> None:
        into = self.members.setdefault(audience, set())
        if op == "add":
            into.update(rows)
            self.added.setdefault(audience, []).extend(rows)
        else:
            into.difference_update(rows)
            self.removed.setdefault(audience, []).extend(rows)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.path,
                              "headers": dict(request.headers), "body": body})
        return body


@asynccontextmanager
async def running(platform: FakePlatform) -> AsyncIterator[FakePlatform]:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", platform.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    platform.base = f"http://{host}:{port}"
    try:
        yield platform
    finally:
        await runner.cleanup()
