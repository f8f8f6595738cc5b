"""Replay throughput against a parse-only baseline on the same file, same run.

    python bench/replay.py [--events 1000000] [--reps 3] [--no-docs]

Generates (once, cached in bench/data/, gitignored) a synthetic JSONL stream
of shopper personas, then runs, interleaved and repeated:

- ``parse``: read every line and ``orjson.loads`` it (the floor any replay pays);
- ``replay-null``: ``replay`` with the shipped config as ``scenetrigger replay``
  runs it without ``--deliver`` (no per-user profile aggregates: nothing
  reads them), triggers to a null sink;
- ``replay-file``: the same, triggers written as JSONL to bench/out/;
- ``replay-null-profiles``: as replay-null with the profile aggregates kept
  (what ``--deliver``, scene user filters and the worker need);
- ``replay-jobs-N`` (``--jobs 1,2,4``): ``replay --jobs N --out FILE``'s
  sharded replay (``replay_sharded``) in N processes, N = 1 included (same
  output; its CPU time includes the shard processes; its wall time against
  ``replay-file``, which is ``replay --jobs 1 --out FILE``, is the speed-up);
- ``replay-null-compiled`` (with ``--compiled build/compiled``): replay-null
  in a fresh interpreter on the opt-in mypyc build of the engine
  (``scripts/build-compiled.sh``, ``make bench-compiled``), timed inside it.

It reports events/s (wall and CPU time: the machine is shared, CPU time is the
steadier figure, except for the sharded run where wall time is the point), the replay/parse ratio, the run-to-run spread, and memory
per tracked user (tracemalloc and RSS deltas in fresh subprocesses, plus the
encoded state bytes per user).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from config.loader import load_config  # noqa: E402
from scenetrigger.runtime.replay import (  # noqa: E402
    jsonl_trigger_writer,
    new_engine,
    replay,
)
from scenetrigger.runtime.replay_shards import replay_sharded  # noqa: E402
from scenetrigger.runtime.sources import read_events  # noqa: E402
from triggers.engine import Engine  # noqa: E402

DATA_DIR = ROOT / "bench" / "data"
OUT_DIR = ROOT / "bench" / "out"
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench/replay.py: start -->", "<!-- bench/replay.py: end -->"


def data_file(events: int, users: int, seed: int) -> Path:
    """The synthetic stream, generated once per (events, users, seed)."""
    path = DATA_DIR / f"personas-{events}-{users}-{seed}.jsonl"
    if path.exists():
        return path
    from scenetrigger.demo.personas import generate_events, write_jsonl

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    started = time.perf_counter()
    with tmp.open("wb") as fh:
        write_jsonl(generate_events(events, users=users, seed=seed), fh)
    tmp.rename(path)
    print(f"generated {path.name} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return path


def describe(path: Path) -> dict[str, Any]:
    types: Counter[str] = Counter()
    users = set()
    first = last = None
    with path.open("rb") as fh:
        for line in fh:
            obj = orjson.loads(line)
            types[obj["type"]] += 1
            users.add(obj["user_id"])
            last = obj["ts"]
            first = last if first is None else first
    assert first is not None and last is not None
    return {"events": sum(types.values()), "users": len(users), "types": dict(types),
            "bytes": path.stat().st_size, "hours": round((last - first) / 3_600_000, 1)}


# -- the measured runs ---------------------------------------------------------

def parse_only(path: Path) -> int:
    loads = orjson.loads
    count = 0
    with path.open("rb", buffering=1 << 20) as fh:
        for line in fh:
            loads(line)
            count += 1
    return count


def replay_run(
    path: Path, sink_to_file: bool, profiles: bool = False
) -> tuple[int, Engine, dict[str, int]]:
    config = load_config()
    engine = new_engine(config, profiles=profiles)
    with path.open("rb", buffering=1 << 20) as fh:
        records = read_events(fh, "jsonl", config.engine.max_line_bytes, config.id_limits())
        if sink_to_file:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            with (OUT_DIR / "triggers.jsonl").open("wb", buffering=1 << 20) as out:
                summary = replay(records, engine, jsonl_trigger_writer(out))
        else:
            summary = replay(records, engine, lambda _t: None)
    return summary.events_read, engine, dict(summary.triggers)


def cpu_seconds() -> float:
    """This process's CPU time plus that of its finished children (shards)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    gc.collect()
    wall, cpu = time.perf_counter(), cpu_seconds()
    own = time.process_time()
    count = fn()
    _last_own[0] = time.process_time() - own
    return count, time.perf_counter() - wall, cpu_seconds() - cpu


_last_own = [0.0]  # the last timed run's CPU seconds in this process alone
_last_shards: list[float] = []  # the last sharded run's CPU seconds per shard


def makespan(seconds: list[float], cores: int) -> float:
    """The longest core's share when the shards run on ``cores`` free cores
    (largest first, each to the least loaded core)."""
    loads = [0.0] * cores
    for each in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += each
    return max(loads)


def sharded_run(path: Path, shards: int) -> tuple[int, dict[str, int]]:
    """As ``scenetrigger replay --jobs N --out FILE``: the lines written as replay-file's."""
    config = load_config()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with (OUT_DIR / f"triggers-jobs-{shards}.jsonl").open("wb", buffering=1 << 20) as out:
        summary = replay_sharded(str(path), "jsonl", config, shards, None, write=out.write)
    _last_shards[:] = summary.shard_cpu
    return summary.events_read, dict(summary.triggers)


def compiled_run(path: Path, build: Path) -> tuple[int, float, float, dict[str, int]]:
    """replay-null in a fresh interpreter on the mypyc build's copy of the
    code (scripts/build-compiled.sh); its own timing, without start-up."""
    done = subprocess.run(
        [sys.executable, str(build / "bench" / "replay.py"), "--probe", "replay",
         "--file", str(path)],
        capture_output=True, check=True, timeout=1800, cwd=build,
    )
    out = json.loads(done.stdout)
    if not out["engine"].endswith(".so"):
        raise SystemExit(f"--compiled: {build} ran {out['engine']}, not a compiled engine")
    return out["read"], out["wall"], out["cpu"], out["triggers"]


def replay_probe(path: Path) -> dict[str, Any]:
    """One timed replay-null (called in a subprocess by compiled_run)."""
    import triggers.engine

    fired: dict[str, int] = {}

    def run() -> int:
        read, _, counts = replay_run(path, False)
        fired.update(counts)
        return read

    read, wall, cpu = timed(run)
    return {"read": read, "wall": wall, "cpu": cpu, "triggers": fired,
            "engine": triggers.engine.__file__}


def measure(path: Path, reps: int, jobs: list[int], build: Path | None) -> dict[str, Any]:
    runs: dict[str, list[tuple[float, float]]] = {
        "parse": [], "replay-null": [], "replay-file": [], "replay-null-profiles": []}
    runs |= {f"replay-jobs-{n}": [] for n in jobs}
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    # CPU seconds on the critical path on free cores: the parent's own, plus
    # the shards' makespan on this machine's cores (a plain run: its CPU).
    critical: dict[str, list[float]] = {name: [] for name in runs}
    if build is not None:
        runs["replay-null-compiled"] = []
    counts: dict[str, int] = {}
    triggers: dict[str, int] = {}
    sharded: dict[str, int] = {}

    def run_replay(to_file: bool, profiles: bool = False) -> int:
        read, _, fired = replay_run(path, to_file, profiles)
        triggers.update(fired)
        return read

    def run_sharded(shards: int) -> int:
        read, fired = sharded_run(path, shards)
        assert not sharded or sharded == fired, (sharded, fired)
        sharded.update(fired)
        return read

    compiled: dict[str, int] = {}

    def run_compiled() -> tuple[int, float, float]:
        assert build is not None
        read, wall, cpu, fired = compiled_run(path, build)
        compiled.update(fired)
        return read, wall, cpu

    jobs_run: dict[str, Callable[[], tuple[int, float, float]]] = {
        "parse": lambda: timed(lambda: parse_only(path)),
        "replay-null": lambda: timed(lambda: run_replay(False)),
        "replay-file": lambda: timed(lambda: run_replay(True)),
        "replay-null-profiles": lambda: timed(lambda: run_replay(False, profiles=True)),
    }
    for n in jobs:
        jobs_run[f"replay-jobs-{n}"] = functools.partial(timed, functools.partial(run_sharded, n))
    if build is not None:
        jobs_run["replay-null-compiled"] = run_compiled
        seconds["replay-null-compiled"] = []
    loads = [os.getloadavg()[0]]
    for rep in range(reps):
        for name, job in jobs_run.items():
            _last_shards.clear()
            count, wall, cpu = job()
            critical.setdefault(name, []).append(
                _last_own[0] + makespan(_last_shards, os.cpu_count() or 1)
                if _last_shards else cpu)
            counts[name] = count
            runs[name].append((count / wall, count / cpu))
            seconds[name].append((wall, cpu))
            loads.append(os.getloadavg()[0])
            print(f"rep {rep + 1}/{reps} {name:<22} {count / wall:>10,.0f} ev/s wall "
                  f"{count / cpu:>10,.0f} ev/s cpu", file=sys.stderr)
    assert len(set(counts.values())) == 1, counts
    assert sharded == triggers, (sharded, triggers)  # the same output, sharded or not
    assert build is None or compiled == triggers, (compiled, triggers)  # and compiled
    result: dict[str, Any] = {"runs": {}, "triggers": triggers, "load": loads}
    for name, values in runs.items():
        walls = [w for w, _ in values]
        cpus = [c for _, c in values]
        result["runs"][name] = {
            "wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus),
            "wall_spread": (max(walls) - min(walls)) / statistics.median(walls),
            "cpu_spread": (max(cpus) - min(cpus)) / statistics.median(cpus),
            "wall": walls, "cpu": cpus,
            "wall_seconds": statistics.median(w for w, _ in seconds[name]),
            "cpu_seconds": statistics.median(c for _, c in seconds[name]),
            "critical_seconds": statistics.median(critical[name]),
            "critical": critical[name],
        }
    return result


# -- memory, each in a fresh process ---------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(path: Path, mode: str) -> dict[str, Any]:
    """Run one replay and measure what the engine keeps (called in a subprocess)."""
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else rss_bytes()
    _, engine, _ = replay_run(path, False, profiles=True)  # the worker's state
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else rss_bytes()
    users = len(engine.store)
    out: dict[str, Any] = {"users": users, "bytes_per_user": (after - before) / users}
    if mode == "rss":
        states = [state for _, state in engine.store.items()]
        out["encoded_per_user"] = sum(len(s.encode()) for s in states) / users
        for user_id, _ in engine.store.items():
            engine.prune_user(user_id)
        out["encoded_per_user_pruned"] = sum(len(s.encode()) for s in states) / users
        out["max_encoded"] = max(len(s.encode()) for s in states)
    return out


def memory(path: Path) -> dict[str, Any]:
    result = {}
    for mode in ("rss", "tracemalloc"):
        done = subprocess.run(
            [sys.executable, __file__, "--probe", mode, "--file", str(path)],
            capture_output=True, check=True, timeout=1800,
        )
        result[mode] = json.loads(done.stdout)
    return result


# -- report --------------------------------------------------------------------

def render(info: dict[str, Any], timing: dict[str, Any], mem: dict[str, Any] | None,
           reps: int) -> str:
    runs = timing["runs"]
    parse = runs["parse"]
    lines = [
        START,
        "## Replay vs parse-only (`bench/replay.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
        f"({os.cpu_count()} cores, shared with other jobs: 1-minute load average "
        f"{min(timing['load']):.1f}–{max(timing['load']):.1f} during the runs), "
        f"Python {sys.version.split()[0]}. Wall figures on a loaded machine are noisy; "
        "CPU figures less so.",
        "",
        f"Input: {info['events']:,} synthetic persona events "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(info['types'].items()))}), "
        f"{info['users']:,} users, {info['hours']} h of event time, "
        f"{info['bytes'] / 1e6:.0f} MB JSONL. Shipped config (3 scenes). "
        f"{reps} repetitions, interleaved; median and spread ((max - min) / median).",
        "",
        "| run | events/s (CPU) | spread | events/s (wall) | spread | CPU s | wall s "
        "| ratio to parse (CPU / wall) | wall vs replay-file (`--jobs 1`) "
        "| critical-path CPU s | vs replay-file by it |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single = runs["replay-file"]
    for name, run in runs.items():
        lines.append(
            f"| {name} | {run['cpu_median']:,.0f} | {run['cpu_spread']:.0%} | "
            f"{run['wall_median']:,.0f} | {run['wall_spread']:.0%} | "
            f"{run['cpu_seconds']:.2f} | {run['wall_seconds']:.2f} | "
            f"{run['cpu_median'] / parse['cpu_median']:.3f} / "
            f"{run['wall_median'] / parse['wall_median']:.3f} | "
            f"{run['wall_median'] / single['wall_median']:.2f}x | "
            f"{run['critical_seconds']:.2f} | "
            f"{single['critical_seconds'] / run['critical_seconds']:.2f}x |"
        )
    lines += [
        "",
        f"Triggers: {', '.join(f'{k} {v:,}' for k, v in timing['triggers'].items())}.",
    ]
    if mem is None:
        return "\n".join([*lines, END])
    rss, traced = mem["rss"], mem["tracemalloc"]
    lines += [
        "",
        f"Memory per tracked user ({rss['users']:,} users, state kept in memory at the end "
        f"of the input): {traced['bytes_per_user']:,.0f} B by tracemalloc, "
        f"{rss['bytes_per_user']:,.0f} B by RSS delta; encoded state "
        f"{rss['encoded_per_user']:,.0f} B per user (largest {rss['max_encoded']:,} B), "
        f"{rss['encoded_per_user_pruned']:,.0f} B after pruning expired windows.",
        END,
    ]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", default="1,2,4",
                        help="the sharded runs' process counts (default 1,2,4)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory probes (two more replays)")
    parser.add_argument("--no-docs", action="store_true",
                        help="print only; do not update this script's section of docs/benchmarks.md")
    parser.add_argument("--compiled", type=Path, metavar="DIR",
                        help="also time replay-null on the mypyc build in DIR "
                             "(scripts/build-compiled.sh: build/compiled)")
    parser.add_argument("--probe", choices=("rss", "tracemalloc", "replay"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe == "replay":
        print(json.dumps(replay_probe(Path(args.file))))
        return 0
    if args.probe:
        print(json.dumps(memory_probe(Path(args.file), args.probe)))
        return 0
    path = data_file(args.events, args.users, args.seed)
    info = describe(path)
    build = args.compiled.resolve() if args.compiled is not None else None
    timing = measure(path, args.reps, [int(n) for n in args.jobs.split(",")], build)
    mem = None if args.no_memory else memory(path)
    section = render(info, timing, mem, args.reps)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "replay.json").write_text(json.dumps(
        {"input": info, "timing": timing, "memory": mem}, indent=2))
    print(section)
    if not args.no_docs:
        write_docs(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
