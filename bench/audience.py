"""What the audience check costs the delivery policy: decisions per second
through ``DeliveryPolicy.decide`` on a private redis-server, without an
audience (caps, dedupe, back-off only) and with one (directory record,
consent hash and do-not-contact lookups before the caps), side by side.

Each round runs both modes on fresh trigger ids (so every decision claims
and reserves), the order rotated per round. 64 decisions in flight.

    .venv/bin/python bench/audience.py --decisions 5000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from deliver import free_port, wait_port  # bench/ is the script's directory

from channels.audience.consent import Audience, ConsentRecord, RedisConsentStore
from channels.audience.directory import RedisDirectory, contact_from
from channels.policy.decide import DeliveryPolicy, DeliveryRequest
from channels.policy.store import RedisPolicyStore
from channels.redis_client import redis_client
from config.delivery_models import CapModel, DeliveryModel, QuietHoursModel

MODES = ("policy", "policy+audience")


USERS = 1_000
NOON = 1_780_056_000_000


async def setup(client: Any) -> Audience:
    directory, consent = RedisDirectory(client, "b:"), RedisConsentStore(client, "b:")
    for n in range(USERS):
        await directory.put(contact_from(f"u{n}", {"email": f"u{n}@example.com",
                                                   "timezone": "Asia/Shanghai"}))
        if n % 10 == 0:
            await consent.set(f"u{n}", "email", "marketing", ConsentRecord(True, 1, "bench"))
    return Audience(directory, consent, {"mail": "email"}, {"email": "opt_out"})


async def run(policy: DeliveryPolicy, tag: str, count: int, concurrency: int) -> float:
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            n = queue.pop()
            req = DeliveryRequest(f"{tag}|{n}", f"u{n % USERS}", "promo", None, NOON,
                                  ("mail",))
            decision = await policy.decide(req, NOON)
            assert decision.action == "send", decision

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def bench(url: str, count: int, rounds: int, concurrency: int) -> dict[str, list[float]]:
    client = redis_client(url, decode_responses=True)
    audience = await setup(client)
    model = DeliveryModel(caps=CapModel(), quiet_hours=QuietHoursModel(enabled=False),
                          redis_prefix="b:")
    policies = {"policy": DeliveryPolicy(model, RedisPolicyStore(client)),
                "policy+audience": DeliveryPolicy(model, RedisPolicyStore(client),
                                                  audience=audience)}
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    for mode in MODES:
        await run(policies[mode], f"warm-{mode}", 1_000, concurrency)
    for round_ in range(rounds):
        order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            rate = await run(policies[mode], f"r{round_}-{mode}", count, concurrency)
            rates[mode].append(rate)
            print(f"round {round_ + 1} {mode:<16} {rate:9,.0f} decisions/s", file=sys.stderr)
    await client.aclose()
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, server, "redis-server")
            rates = asyncio.run(bench(f"redis://127.0.0.1:{port}/0", args.decisions,
                                      args.rounds, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=10)
    base = rates["policy"]
    print(f"{args.decisions} decisions per mode per round, {args.rounds} rounds, "
          f"{args.concurrency} in flight\n")
    print("| mode | decisions/s median (range) | vs policy alone (per round, median) |")
    print("|---|---|---|")
    for mode in MODES:
        ratios = [r / b for r, b in zip(rates[mode], base, strict=True)]
        print(f"| {mode} | {statistics.median(rates[mode]):,.0f} "
              f"({min(rates[mode]):,.0f}–{max(rates[mode]):,.0f}) | "
              f"{statistics.median(ratios):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
