"""Latency of ``GET /slots/{slot}`` on ``scenetrigger serve`` at a fixed
request rate, side by side with a bare aiohttp handler that reads the same
Redis key (the floor: one GET of the visitor's live profile, no choice).

A private redis-server holds ``--users`` live profiles (search-driven,
category browsers, promo-driven and undetermined visitors in turn, one in
ten tagged ``vip``) and a small catalog. Both servers run as their own
processes; this process offers the load open-loop: requests are sent on a
fixed schedule (``--rate`` per second for ``--seconds`` after ``--warmup``),
each timed from when it was due, so a slow server cannot slow the offer
(no coordinated omission). Every request is signed for a random known
visitor (the slot reads their profile and tags in one pipeline). Rounds
alternate floor and slots.

    nice .venv/bin/python bench/slots.py --rate 2000 --seconds 10 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from deliver import free_port, wait_port  # bench/ is the script's directory

PREFIX = "b:"
SLOT_SECRET = "bench-slot-secret"
CONFIG = """
scenes:
  promo_arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page}
delivery: {redis_prefix: "b:"}
slots:
  home:
    variants:
      - {name: vip_deal, when: {style: [search_driven, category_browser, promo_driven,
                                        undetermined], tags_any: [vip]},
         products: hot, max_products: 1, subject: "For our VIPs: ${product_name}",
         text: "${product_name} at ${currency}${product_price}"}
      - {name: searcher, when: {style: [search_driven]}, products: trigger, max_products: 1,
         subject: "Still looking for ${query}?", text: "${product_name}",
         html: "<p>You searched <b>${query}</b>: ${products}</p>"}
      - {name: new_in_category, when: {style: [category_browser]}, products: category,
         max_products: 3, subject: "New in ${category}", text: "${products}"}
      - {name: hot_deals, when: {style: [promo_driven]}, products: hot, max_products: 3,
         subject: "Hot deals", text: "${products}"}
    default: {subject: "Welcome", text: "Sign in for picks of your own."}
"""
STYLES = ("search", "category", "promo", "none")


def _profile(n: int, now: int) -> Any:
    from triggers.events import Event
    from triggers.profile import Profile

    profile = Profile()
    style, cat, product = STYLES[n % 4], f"c{n % 20}", f"p{n % 200}"
    events = [("view", {"product_id": product, "category": cat})] * 3
    events += {"search": [("search", {"query": f"thing {n}"})] * 4,
               "category": [("page", {"page": f"/category/{cat}"})] * 3,
               "promo": [("page", {"page": "/promo/sale"})] * 4, "none": []}[style]
    for i, (etype, fields) in enumerate(events):
        profile.update(Event(f"u{n}", now - 60_000 + i, etype, {"type": etype, **fields}))
    return profile


async def setup(url: str, users: int) -> None:
    from channels.audience.live_profile import LiveProfileStore
    from channels.content.catalog import Product, RedisCatalog
    from channels.redis_client import redis_client

    client = redis_client(url)
    text = redis_client(url, decode_responses=True)
    now = int(time.time() * 1000)
    await RedisCatalog(text, f"{PREFIX}cat:").load(
        Product(f"p{i}", f"Product {i}", 1_000 + i, f"https://shop.example.com/p/{i}", "",
                f"c{i % 20}", "brand", is_new=i % 7 == 0, discount=(i % 5) * 10)
        for i in range(200))
    store = LiveProfileStore(client, PREFIX)
    pipe = client.pipeline(transaction=False)
    for n in range(users):
        pipe.set(store.key(f"u{n}"), orjson.dumps([now, _profile(n, now).to_wire()]))
        if n % 10 == 0:
            pipe.sadd(f"{PREFIX}tags:{{u{n}}}", "vip")
    await pipe.execute()
    await client.aclose()
    await text.aclose()


def floor_server(url: str, port: int) -> None:
    """The floor: GET one Redis key per request, answer it as JSON."""
    from aiohttp import web

    from channels.redis_client import redis_client

    async def main() -> None:
        client = redis_client(url, wait_for_connection_s=5.0)  # as serve's

        async def get(request: web.Request) -> web.Response:
            user = request.query.get("user", "")
            raw = await client.get(f"{PREFIX}profile:{{{user}}}")
            return web.Response(body=orjson.dumps({"user": user, "bytes": len(raw or b"")}),
                                content_type="application/json")

        app = web.Application()
        app.router.add_get("/floor/{slot}", get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


def _pct(values: list[float], q: float) -> float | None:
    """The q-quantile in ms; None when nothing was answered in time."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def offer(urls: list[str], rate: int, seconds: float, warmup: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    seen: dict[str, str] = {}  # the first error of each kind
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=1024)
    # an answer later than this is an error: an overloaded run ends, not drains for minutes
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(url: str, due: float, counted: bool) -> None:
            nonlocal errors
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    ok = resp.status == 200
                    if not ok:
                        seen.setdefault(f"HTTP {resp.status}", "")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                ok = False
                seen.setdefault(type(exc).__name__, str(exc)[:200])
            if counted:
                if ok:
                    latencies.append(time.perf_counter() - due)
                else:
                    errors += 1

        start = time.perf_counter() + 0.05
        total = int(rate * (warmup + seconds))
        sent = 0
        while sent < total:
            now = time.perf_counter()
            due_now = min(total, int((now - start) * rate) + 1)
            while sent < due_now:
                due = start + sent / rate
                task = asyncio.create_task(one(urls[sent % len(urls)], due,
                                               due >= start + warmup))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        took = time.perf_counter() - start - warmup
    return {"requests": len(latencies), "errors": errors,
            "offered_per_s": rate, "achieved_per_s": round(len(latencies) / max(took, 1e-9)),
            "p50_ms": _ms(_pct(latencies, 0.50)), "p90_ms": _ms(_pct(latencies, 0.90)),
            "p99_ms": _ms(_pct(latencies, 0.99)), "max_ms": _ms(_pct(latencies, 1.0)),
            "error_kinds": seen}


def _cpu_s(pid: int) -> float:
    """The process's user+system CPU seconds so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(cmd: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    wait_port(port, proc, cmd[0])
    return proc


def run(args: argparse.Namespace, tmp: Path, url: str) -> dict[str, Any]:
    from urllib.parse import urlencode

    from config.tokens import SIG_TTL_S, slot_query

    asyncio.run(setup(url, args.users))
    rnd = random.Random(args.seed)
    picks = [f"u{rnd.randrange(args.users)}" for _ in range(20_000)]
    config = tmp / "slots.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "SCENETRIGGER_SLOT_SECRET": SLOT_SECRET,
           "SCENETRIGGER_TRACKING_SECRET": "bench-tracking"}
    cli = str(Path(sys.executable).with_name("scenetrigger"))
    rows = []
    for r in range(args.rounds):
        for mode in ("floor", "slots"):
            port = free_port()
            if mode == "floor":
                cmd = [sys.executable, __file__, "--floor-server", url, str(port)]
                urls = [f"http://127.0.0.1:{port}/floor/home?user={u}" for u in picks]
            else:
                cmd = [cli, "serve", "--config", str(config), "--redis-url", url,
                       "--port", str(port), "--tags-prefix", PREFIX]
                exp = int(time.time()) + SIG_TTL_S  # as a shop page signs it
                urls = [f"http://127.0.0.1:{port}/slots/home?"
                        f"{urlencode(slot_query(SLOT_SECRET, u, exp))}" for u in picks]
            proc = _start(cmd, env, port, tmp / f"{mode}{r}.log")
            try:
                cpu0 = _cpu_s(proc.pid)
                row = asyncio.run(offer(urls, args.rate, args.seconds, args.warmup))
                cpu = _cpu_s(proc.pid) - cpu0
                total = args.rate * (args.seconds + args.warmup)
                row["server_cpu_us_per_request"] = round(cpu * 1e6 / total)
            finally:
                proc.terminate()
                proc.wait(timeout=15)
            rows.append({"round": r + 1, "mode": mode, **row})
            print(f"round {r + 1} {mode}: {row}", file=sys.stderr, flush=True)
    return {"rate": args.rate, "seconds": args.seconds, "users": args.users,
            "load": os.getloadavg(), "rows": rows}


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['rate']:,} requests/s offered for {result['seconds']:.0f} s per run, "
             f"{result['users']:,} visitors; load average after: "
             f"{', '.join(f'{x:.2f}' for x in result['load'])}", "",
             "| round | server | achieved/s | errors | p50 ms | p90 ms | p99 ms | max ms "
             "| server CPU µs/request |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['round']} | {row['mode']} | {row['achieved_per_s']:,} | "
                     f"{row['errors']} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | "
                     f"{row['max_ms']} | {row['server_cpu_us_per_request']} |")
    slots = [r["p99_ms"] for r in result["rows"] if r["mode"] == "slots"]
    floor = [r["p99_ms"] for r in result["rows"] if r["mode"] == "floor"]
    ratios = [f"{s / f:.2f}" if s and f else "n/a" for s, f in zip(slots, floor, strict=True)]
    answered = [x for x in slots if x is not None], [x for x in floor if x is not None]
    lines += ["", f"p99 slots / floor, per round: {', '.join(ratios)}; median p99: slots "
              f"{statistics.median(answered[0]) if answered[0] else 'n/a'} ms, floor "
              f"{statistics.median(answered[1]) if answered[1] else 'n/a'} ms"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=2_000, help="requests/s offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--floor-server", nargs=2, metavar=("REDIS_URL", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        floor_server(args.floor_server[0], int(args.floor_server[1]))
        return 0
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
            result = run(args, Path(tmp), f"redis://127.0.0.1:{port}/0")
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(render(result))
    if args.json:
        Path(args.json).write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
