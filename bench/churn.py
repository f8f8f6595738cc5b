"""Churn and next-purchase figures on real samples, with the tail held out.

    python bench/churn.py [FILE ...] [--holdout 0.25] [--fit] [--json]
    python bench/churn.py --synthetic 2000 [--seed 7] [--fit]

For each file (default: the shared rees46 and OTTO samples) the events up to
a cut (the first ``1 - holdout`` of the file's time span) build the users'
profiles, exactly as the engine does (``triggers.profile``); the events after
the cut are the held-out tail the model never sees. Then, per file:

- **next purchase**: for users with at least one interval between purchase
  occasions before the cut who bought again after it, the mean absolute
  error (hours) between the predicted next purchase (newest purchase + mean
  interval, ``triggers.churn.next_purchase_ms``) and their first purchase
  after the cut, beside a baseline that gives every one of them the
  population's median cycle;
- **churn risk**: for users who bought before the cut, the AUC of P(active)
  at the cut (BG/NBD, ``triggers.churn``; the horizon = the held-out span)
  against "bought again after the cut" (equal to the AUC of churn risk =
  1 - P(active) against "did not"), and the same for P(alive) alone. Ties
  count a half. With ``--fit`` the four parameters are fitted (maximum
  likelihood, Nelder-Mead on their logarithms) on the users before the cut;
  else the shipped defaults (the published CDNOW fit) are used.

Every count behind a figure is printed: small samples give figures that mean
little, and the output says so. ``--synthetic N`` measures N seeded users
drawn from the BG/NBD process itself (rates from Gamma(r, alpha), a
drop-out chance from Beta(a, b) after each repeat purchase, 365 days, default
parameters): a check that the measurement finds a model that is right.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from scenetrigger.runtime.sources import detect_format, read_events  # noqa: E402
from triggers.churn import DAY_MS, BgNbd, next_purchase_ms, rfm  # noqa: E402
from triggers.cycle import as_cycle  # noqa: E402
from triggers.events import Event  # noqa: E402
from triggers.profile import Profile  # noqa: E402

SHARED = Path(os.environ.get("SCENETRIGGER_SHARED", ROOT.parent / "shared")) / "data"
DEFAULT_FILES = [SHARED / "rees46-2019-10-01-sample.csv", SHARED / "otto-sample.jsonl"]
MIN_MEANINGFUL = 30  # below this many users per class a figure is reported as indicative only
HOUR_MS = 3_600_000


def load(path: Path) -> list[Event]:
    with path.open("rb") as fh:
        first = fh.readline()
    with path.open("rb") as fh:
        records = read_events(fh, detect_format(first, path.name))
        return [item for _, item in records if isinstance(item, Event)]


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties 1/2."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def nelder_mead(f: Callable[[list[float]], float], start: list[float],
                steps: int = 2000) -> list[float]:
    """Minimise ``f`` (small, dependency-free; enough for four parameters)."""
    dim = len(start)
    simplex = [list(start)] + [[v + (0.5 if i == j else 0.0) for j, v in enumerate(start)]
                               for i in range(dim)]
    values = [f(p) for p in simplex]
    for _ in range(steps):
        order = sorted(range(dim + 1), key=values.__getitem__)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[-1] - values[0]) < 1e-10:
            break
        centre = [sum(p[j] for p in simplex[:-1]) / dim for j in range(dim)]
        worst = simplex[-1]
        reflect = [c + (c - w) for c, w in zip(centre, worst, strict=True)]
        fr = f(reflect)
        if fr < values[0]:
            expand = [c + 2 * (c - w) for c, w in zip(centre, worst, strict=True)]
            fe = f(expand)
            simplex[-1], values[-1] = (expand, fe) if fe < fr else (reflect, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflect, fr
        else:
            contract = [c + 0.5 * (w - c) for c, w in zip(centre, worst, strict=True)]
            fc = f(contract)
            if fc < values[-1]:
                simplex[-1], values[-1] = contract, fc
            else:
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (v - b) for b, v in zip(best, p, strict=True)]
                                    for p in simplex[1:]]
                values = [values[0]] + [f(p) for p in simplex[1:]]
    return simplex[min(range(dim + 1), key=values.__getitem__)]


def fit(users: Sequence[tuple[int, float, float]]) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters for ``(x, t_x, T)`` in days."""
    def loss(logs: list[float]) -> float:
        try:
            model = BgNbd(*(math.exp(v) for v in logs))
            return -sum(model.log_likelihood(*u) for u in users)
        except (ValueError, OverflowError):
            return math.inf
    d = BgNbd()
    best = nelder_mead(loss, [math.log(v) for v in (d.r, d.alpha, d.a, d.b)])
    return BgNbd(*(math.exp(v) for v in best))


def synthetic(users: int, seed: int, days: int = 365) -> list[Event]:
    """Purchases of ``users`` from the BG/NBD process (seeded), in time order."""
    rng = random.Random(seed)
    truth = BgNbd()
    events = []
    for n in range(users):
        rate = rng.gammavariate(truth.r, 1 / truth.alpha)  # purchases per day
        drop = rng.betavariate(truth.a, truth.b)
        t = rng.uniform(0, days / 2)  # when the user first buys
        first = True
        while t < days:
            events.append(Event(f"s{n}", round(t * DAY_MS), "purchase", {"type": "purchase"}))
            if not first and rng.random() < drop:  # drop-out follows a repeat purchase
                break
            first = False
            t += rng.expovariate(rate) if rate > 0 else days
    events.sort(key=lambda e: e.ts)
    return events


def measure(path: Path, holdout: float, fitted: bool) -> dict[str, Any]:
    return measure_events(path.name, load(path), holdout, fitted)


def measure_events(name: str, events: list[Event], holdout: float,
                   fitted: bool) -> dict[str, Any]:
    start, end = min(e.ts for e in events), max(e.ts for e in events)
    cut = start + round((end - start) * (1 - holdout))
    profiles: dict[str, Profile] = {}
    next_buy: dict[str, int] = {}
    for event in events:  # input order, as replay takes them
        if event.ts <= cut:
            profiles.setdefault(event.user_id, Profile()).update(event)
        elif event.type == "purchase":
            seen = next_buy.get(event.user_id)
            next_buy[event.user_id] = event.ts if seen is None else min(seen, event.ts)
    buyers = {u: p for u, p in profiles.items() if p.last_purchase_ts is not None}
    inputs = {u: rfm(p, cut) for u, p in buyers.items()}
    rows = {u: r for u, r in inputs.items() if r is not None}
    model = fit(list(rows.values())) if fitted and rows else BgNbd()
    horizon = (end - cut) / DAY_MS
    scores = [model.p_active(*r, horizon) for r in rows.values()]
    alive = [model.p_alive(*r) for r in rows.values()]
    labels = [u in next_buy for u in rows]
    errors, baseline = [], []
    means = sorted(c.mean_ms for c in (as_cycle(p.cycle) for p in buyers.values()) if c)
    median = means[len(means) // 2] if means else None
    for user, profile in buyers.items():
        predicted = next_purchase_ms(profile)
        if predicted is not None and user in next_buy and median is not None:
            errors.append(abs(predicted - next_buy[user]) / HOUR_MS)
            # the same users, everyone given the population's median cycle
            last = profile.last_purchase_ts or 0
            baseline.append(abs(last + median - next_buy[user]) / HOUR_MS)
    bought_again = sum(labels)
    return {
        "file": name,
        "events": len(events),
        "users": len({e.user_id for e in events}),
        "span_days": round((end - start) / DAY_MS, 3),
        "holdout_days": round((end - cut) / DAY_MS, 3),
        "buyers_before_cut": len(rows),
        "with_repeat_occasion": sum(r[0] > 0 for r in rows.values()),
        "bought_again": bought_again,
        "did_not": len(rows) - bought_again,
        "auc_p_active": auc(scores, labels),
        "auc_p_alive": auc(alive, labels),
        "next_purchase_users": len(errors),
        "next_purchase_mae_hours": sum(errors) / len(errors) if errors else None,
        "baseline_mae_hours": sum(baseline) / len(baseline) if baseline else None,
        "model": {"r": model.r, "alpha": model.alpha, "a": model.a, "b": model.b,
                  "fitted": fitted and bool(rows)},
        "meaningful": min(bought_again, len(rows) - bought_again) >= MIN_MEANINGFUL
        and len(errors) >= MIN_MEANINGFUL,
    }


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="event files (default: the shared"
                        " rees46 and OTTO samples)")
    parser.add_argument("--holdout", type=float, default=0.25,
                        help="share of each file's time span held out at the end (default 0.25)")
    parser.add_argument("--fit", action="store_true",
                        help="fit the BG/NBD parameters on the data before the cut")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--synthetic", type=int, metavar="N",
                        help="measure N synthetic BG/NBD users instead of files")
    parser.add_argument("--seed", type=int, default=7, help="seed of --synthetic (default 7)")
    args = parser.parse_args(argv)
    if not 0 < args.holdout < 1:
        parser.error("--holdout must be between 0 and 1")
    if args.synthetic is not None:
        if args.synthetic < 1:
            parser.error("--synthetic needs at least 1 user")
        results = [measure_events(f"synthetic-{args.synthetic}-seed-{args.seed}",
                                  synthetic(args.synthetic, args.seed), args.holdout, args.fit)]
    else:
        files = args.files or DEFAULT_FILES
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            parser.error(f"no such file: {', '.join(missing)}")
        results = [measure(f, args.holdout, args.fit) for f in files]
    if args.json:
        print(json.dumps({"holdout": args.holdout, "results": results}, indent=2))
        return 0
    for r in results:
        print(f"{r['file']}: {r['events']} events, {r['users']} users, {r['span_days']} days "
              f"(last {r['holdout_days']} held out)")
        print(f"  churn AUC of P(active) vs bought again: {_fmt(r['auc_p_active'])} "
              f"(P(alive) alone: {_fmt(r['auc_p_alive'])}) over "
              f"{r['buyers_before_cut']} buyers ({r['with_repeat_occasion']} with a repeat "
              f"occasion; {r['bought_again']} bought again, {r['did_not']} did not)")
        print(f"  next purchase MAE: {_fmt(r['next_purchase_mae_hours'])} h over "
              f"{r['next_purchase_users']} users (everyone on the median cycle: "
              f"{_fmt(r['baseline_mae_hours'])} h)")
        m = r["model"]
        print(f"  model ({'fitted' if m['fitted'] else 'defaults'}): r={m['r']:.4g} "
              f"alpha={m['alpha']:.4g}d a={m['a']:.4g} b={m['b']:.4g}")
        if not r["meaningful"]:
            print(f"  too small for a meaningful figure (fewer than {MIN_MEANINGFUL} users "
                  "in a class or with a prediction)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
