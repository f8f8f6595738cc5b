"""What the audience check costs the delivery policy: decisions per second
through ``DeliveryPolicy.decide`` on a private redis-server, without an
audience (caps, dedupe, back-off only) and with one (``Audience.resolve``:
directory record, consent hash and do-not-contact hits, then the policy
with that recipient), side by side, with the Redis round trips per decision
(each command or pipeline sent counts one).

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
from redis.asyncio import Connection

from channels.assembly import audience_rules
from channels.audience.consent import ConsentRecord, RedisConsentStore
from channels.audience.directory import RedisDirectory, contact_from
from channels.audience.recipient import Audience
from channels.policy.decide import DeliveryPolicy, DeliveryRequest
from channels.policy.store import RedisPolicyStore
from channels.redis_client import redis_client
from config.delivery_models import CapModel, DeliveryModel, QuietHoursModel

MODES = ("policy", "policy+audience")


USERS = 1_000
NOON = 1_780_056_000_000


class CountingConnection(Connection):
    """A connection that counts what it sends: one round trip per command or pipeline."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


async def setup(client: Any) -> Audience:
    directory, consent = RedisDirectory(client, "b:"), RedisConsentStore(client, "b:")
    for n in range(USERS):
        await directory.put(contact_from(f"u{n}", {"email": f"u{n}@example.com",
                                                   "timezone": "Asia/Shanghai"}))
        if n % 10 == 0:
            await consent.set(f"u{n}", "email", "marketing", ConsentRecord(True, 1, "bench"))
    return Audience(directory, consent, audience_rules({"mail": "email"}))


async def run(policy: DeliveryPolicy, audience: Audience | None, tag: str, count: int,
              concurrency: int) -> tuple[float, float]:
    """Decisions per second, and Redis round trips per decision."""
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            n = queue.pop()
            user = f"u{n % USERS}"
            req = DeliveryRequest(f"{tag}|{n}", user, "promo", None, NOON, ("mail",))
            recipient = None
            if audience is not None:
                recipient = await audience.resolve(user, audience.purpose(req.scene), None)
            decision = await policy.decide(req, NOON, recipient=recipient)
            assert decision.action == "send", decision

    sent = CountingConnection.sent
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = count / (time.perf_counter() - started)
    return rate, (CountingConnection.sent - sent) / count


async def bench(url: str, count: int, rounds: int, concurrency: int,
                caps: bool) -> tuple[dict[str, list[float]], dict[str, float]]:
    client = redis_client(url, decode_responses=True, connection_class=CountingConnection)
    audience = await setup(client)
    # Without caps the policy reads no counters (claim and back-off only);
    # --caps: caps that never fill, so every decision also reserves.
    cap = CapModel(per_day=10**9, per_week=10**9) if caps else CapModel()
    model = DeliveryModel(caps=cap, quiet_hours=QuietHoursModel(enabled=False),
                          redis_prefix="b:")
    policy = DeliveryPolicy(model, RedisPolicyStore(client))
    audiences = {"policy": None, "policy+audience": audience}
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    trips: dict[str, float] = {}
    for mode in MODES:  # loads the scripts, and keeps each user's do-not-contact hits
        await run(policy, audiences[mode], f"warm-{mode}", 1_000, concurrency)
    for round_ in range(rounds):
        order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            rate, trips[mode] = await run(policy, audiences[mode], f"r{round_}-{mode}", count,
                                          concurrency)
            rates[mode].append(rate)
            print(f"round {round_ + 1} {mode:<16} {rate:9,.0f} decisions/s "
                  f"{trips[mode]:.2f} round trips each", file=sys.stderr)
    await client.aclose()
    return rates, trips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--caps", action="store_true",
                        help="frequency caps on (never full): the policy reserves too")
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
            rates, trips = asyncio.run(bench(f"redis://127.0.0.1:{port}/0", args.decisions,
                                      args.rounds, args.concurrency, args.caps))
        finally:
            server.terminate()
            server.wait(timeout=10)
    base = rates["policy"]
    print(f"{args.decisions} decisions per mode per round, {args.rounds} rounds, "
          f"{args.concurrency} in flight, caps {'on' if args.caps else 'off'}\n")
    print("| mode | decisions/s median (range) | vs policy alone (per round, median) "
          "| Redis round trips per decision |")
    print("|---|---|---|---|")
    for mode in MODES:
        ratios = [r / b for r, b in zip(rates[mode], base, strict=True)]
        print(f"| {mode} | {statistics.median(rates[mode]):,.0f} "
              f"({min(rates[mode]):,.0f}–{max(rates[mode]):,.0f}) | "
              f"{statistics.median(ratios):.2f} | {trips[mode]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
