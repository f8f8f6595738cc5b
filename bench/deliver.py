"""Delivery throughput: webhook channel vs a bare aiohttp POST loop vs the Redis inbox.

Starts an aiohttp sink in another process and a private redis-server, then
per round runs, on the same message stream and with the same number of
deliveries in flight:

- ``bare``:    ``session.post(url, data=body)`` in a loop (the ceiling);
- ``webhook``: ``ChannelSender`` → ``WebhookChannel`` (orjson body, HMAC
  signature, retry wrapper, Prometheus metrics);
- ``inbox``:   ``ChannelSender`` → ``InboxChannel`` (one Lua call per message);
- ``*-batch``: the same channels with ``batch_max`` = ``--batch``: one signed
  POST, or one Redis pipeline, carries up to that many concurrent sends.

The order of the modes rotates per round so no mode always runs on a warm
(or cold) machine. Prints a Markdown table (median and range over rounds).

    .venv/bin/python bench/deliver.py --messages 20000 --rounds 5 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from channels.base import Channel, Message
from channels.redis_client import redis_client
from channels.transports.inbox import InboxChannel, InboxStore
from channels.transports.registry import ChannelRegistry, ChannelSender
from channels.transports.webhook import WebhookChannel
from channels.transports.wire import message_to_json

MODES = ("bare", "webhook", "webhook-batch", "inbox", "inbox-batch")


@dataclass(frozen=True, slots=True)
class RunResult:
    mode: str
    deliveries: int
    failures: int
    seconds: float
    cpu_seconds: float  # this (client) process only: sink and Redis run elsewhere
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Deliveries per CPU-second of the sender: what one free core would
        do if the peer kept up, and far steadier than wall-clock rates on a
        shared machine."""
        return self.deliveries / self.cpu_seconds


# -- the sink (runs in its own process) ----------------------------------------

def run_loop(coro: Coroutine[Any, Any, list[RunResult]], loop: str) -> list[RunResult]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def serve_sink(port: int, loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.install()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


# -- the load loop -----------------------------------------------------------------

def make_messages(tag: str, count: int) -> list[Message]:
    return [
        Message(
            message_id=f"{tag}-{i}", trigger_id=f"t-{tag}-{i}", user_id=f"u{i % 1000}",
            scene="cart_abandonment", channel="bench", subject="Still thinking about it?",
            text="Your cart misses you: Running shoe X, 59.90, https://shop.example/p/123",
            html="<p>Your cart misses you: <b>Running shoe X</b></p>",
            data={"product_id": "123", "price": 59.9, "segment": "loyal"},
            created_ms=1_700_000_000_000 + i,
        )
        for i in range(count)
    ]


async def drive(mode: str, messages: list[Message], concurrency: int,
                send: Callable[[Message], Awaitable[bool]]) -> RunResult:
    """``concurrency`` workers pull the next message until none is left."""
    latencies: list[int] = [0] * len(messages)
    failures = 0
    cursor = 0

    async def worker() -> None:
        nonlocal cursor, failures
        while cursor < len(messages):
            index = cursor
            cursor += 1
            started = time.perf_counter_ns()
            if not await send(messages[index]):
                failures += 1
            latencies[index] = time.perf_counter_ns() - started

    began, cpu_began = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    ordered = sorted(latencies)
    return RunResult(mode, len(messages), failures, seconds, cpu,
                     ordered[len(ordered) // 2] / 1e6, ordered[int(len(ordered) * 0.99)] / 1e6)


async def bench(url: str, redis_url: str, count: int, rounds: int,
                concurrency: int, batch: int) -> list[RunResult]:
    metrics = CollectorRegistry()
    client = redis_client(redis_url, max_connections=concurrency * 2)
    store = InboxStore(client, prefix="bench:inbox", max_messages=100)
    hook = WebhookChannel("webhook", url, b"bench-secret", timeout_ms=10_000,
                          max_connections=concurrency)
    hook_batch = WebhookChannel("webhook-batch", url, b"bench-secret", timeout_ms=10_000,
                                max_connections=concurrency, batch_max=batch, batch_linger_ms=2)
    inbox = InboxChannel("inbox", store)
    inbox_batch = InboxChannel("inbox-batch", store, batch_max=batch, batch_linger_ms=2)
    channels: dict[str, Channel] = {"webhook": hook, "webhook-batch": hook_batch, "inbox": inbox,
                                    "inbox-batch": inbox_batch}
    sender = ChannelSender(ChannelRegistry(dict(channels)), None, metrics_registry=metrics)
    bare_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=10))

    async def bare(message: Message) -> bool:
        # The same bytes the webhook would send, minus signing and bookkeeping.
        body = message_to_json(message)
        async with bare_session.post(url, data=body,
                                     headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
            return resp.status == 200

    def via(name: str) -> Callable[[Message], Awaitable[bool]]:
        async def send(message: Message) -> bool:
            return (await sender.send(message, name)).ok
        return send

    senders = {"bare": bare, **{name: via(name) for name in channels}}
    results: list[RunResult] = []
    try:
        # Warm-up: open connections, load the Lua script, JIT nothing.
        for mode in MODES:
            await drive(mode, make_messages(f"warm-{mode}", 2_000), concurrency, senders[mode])
        for round_ in range(rounds):
            shift = round_ % len(MODES)
            order = MODES[shift:] + MODES[:shift]
            for mode in order:
                messages = make_messages(f"r{round_}-{mode}", count)
                result = await drive(mode, messages, concurrency, senders[mode])
                results.append(result)
                print(f"round {round_ + 1} {mode:<13} {result.rate:9.0f}/s  "
                      f"{result.cpu_rate:7.0f}/cpu-s  "
                      f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                      f"failures {result.failures}", file=sys.stderr)
    finally:
        await bare_session.close()
        for channel in channels.values():
            await channel.close()
        await client.aclose()
    return results


def report(results: list[RunResult], args: argparse.Namespace) -> str:
    by_mode = {mode: [r for r in results if r.mode == mode] for mode in MODES}
    bare_rates = [r.rate for r in by_mode["bare"]]
    lines = [
        f"{args.messages} deliveries per mode per round, {args.rounds} rounds, "
        f"{args.concurrency} in flight, batches of {args.batch}; "
        "median (min–max) over rounds.",
        "",
        "| mode | deliveries/s | vs bare (per round) | per client CPU-s | vs bare | p50 ms "
        "| p99 ms | failures |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bare_cpu = [r.cpu_rate for r in by_mode["bare"]]
    for mode in MODES:
        runs = by_mode[mode]
        rates = [r.rate for r in runs]
        ratios = [r.rate / b for r, b in zip(runs, bare_rates, strict=True)]
        cpu = [r.cpu_rate for r in runs]
        cpu_ratios = [r.cpu_rate / b for r, b in zip(runs, bare_cpu, strict=True)]
        p50 = [r.p50_ms for r in runs]
        p99 = [r.p99_ms for r in runs]
        lines.append(
            f"| {mode} | {statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) "
            f"| {statistics.median(cpu):,.0f} ({min(cpu):,.0f}–{max(cpu):,.0f}) "
            f"| {statistics.median(cpu_ratios):.2f} ({min(cpu_ratios):.2f}–{max(cpu_ratios):.2f}) "
            f"| {statistics.median(p50):.2f} "
            f"| {statistics.median(p99):.2f} ({min(p99):.2f}–{max(p99):.2f}) "
            f"| {sum(r.failures for r in runs)} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="batch_max of the batched mode")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--json", help="also write the raw runs here")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop of the sender and the sink (uvloop: pip install uvloop)")
    parser.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink, args.loop)
        return 0

    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, __file__, "--serve-sink", str(sink_port),
                             "--loop", args.loop])
    redis_proc = None
    workdir = tempfile.mkdtemp(prefix="bench-deliver-")
    try:
        wait_port(sink_port, sink, "sink")
        redis_url = args.redis_url
        if redis_url is None:
            binary = shutil.which("redis-server")
            if binary is None:
                raise SystemExit("redis-server not found (apt-get install redis-server)")
            port = free_port()
            redis_proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir],
                stdout=subprocess.DEVNULL)
            wait_port(port, redis_proc, "redis-server")
            redis_url = f"redis://127.0.0.1:{port}/0"
        results = run_loop(bench(f"http://127.0.0.1:{sink_port}/hook", redis_url,
                                 args.messages, args.rounds, args.concurrency, args.batch),
                           args.loop)
    finally:
        for proc in (sink, redis_proc):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(results, args))
    print(f"\npython {sys.version.split()[0]}, {args.loop} loop, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(
            [{"mode": r.mode, "deliveries": r.deliveries, "failures": r.failures,
              "seconds": r.seconds, "cpu_seconds": r.cpu_seconds, "rate": r.rate,
              "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
             for r in results], option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
