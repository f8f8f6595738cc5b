"""Mutation testing of the modules that hold a security or delivery contract
(``make mutate``; docs/testing.md, "Mutation testing").

For each contract module, mutmut plants one small bug at a time (a flipped
comparison, a changed constant, a dropped argument) and runs that module's
own unit tests; a mutant the tests do not fail "survived". A survivor is
either a missing test or an equivalent mutant (a change no behaviour can
tell apart): the equivalent ones are listed, each with its reason, in
``tests/mutants_equivalent.json``. The score of a module is killed /
(mutants - listed equivalents); the goal is in :data:`GOALS`.

mutmut edits the module in place while it runs (and restores it): run this on
a clean tree, never beside a running worker. Progress goes to stderr; the
summary to stdout (``--json`` for a script).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EQUIVALENTS = REPO / "tests" / "mutants_equivalent.json"

CONSENT_TESTS = ("tests/channels/test_consent_store.py", "tests/channels/test_consent_routes.py",
                 "tests/channels/test_audience.py", "tests/channels/test_consent_http.py",
                 "tests/channels/test_unsubscribe_links.py",
                 "tests/channels/test_preference_centre.py")

# module -> (its tests, the goal). Signatures, consent, tokens and identity:
# 95 %; the rest of the contracts: 90 %. Unit tests only, except where a
# module's tests need nothing but loopback HTTP (LOOPBACK_OK).
CONTRACTS: dict[str, tuple[tuple[str, ...], float]] = {
    "config/tokens.py": (("tests/config/test_tokens.py",), 0.95),
    "channels/transports/webhook.py": (("tests/channels/test_webhook.py",), 0.95),
    # Consent and its signed links: the store and the signature formula
    # (consent.py), the routes that check a link before any change
    # (consent_http.py).
    "channels/audience/consent.py": (CONSENT_TESTS, 0.95),
    "channels/audience/consent_http.py": (CONSENT_TESTS, 0.95),
    "triggers/merge.py": (("tests/triggers/test_merge_states.py",
                           "tests/triggers/test_host_identity.py",
                           "tests/triggers/test_identity_rules.py",
                           "tests/agents/test_identity_unit.py"), 0.95),
    "channels/policy/control.py": (("tests/channels/test_control_groups.py",
                                    "tests/channels/test_control_delivery.py"), 0.90),
    "channels/policy/decide.py": (("tests/channels/test_policy_rules.py",
                                   "tests/channels/test_policy.py",
                                   "tests/channels/test_delivery_lease.py",
                                   "tests/channels/test_policy_calendar.py",
                                   "tests/channels/test_bad_time.py",
                                   "tests/channels/test_send_time.py",
                                   "tests/channels/test_orders.py"), 0.90),
    # Each kind against its own tests (and the kinds' and explain's shared
    # ones): the whole tests/triggers folder took 150 s a mutant on a loaded
    # 2-core machine (most of it the reference model's comparison), these 8 s.
    "triggers/kinds/repeat.py": (("tests/triggers/test_repeat_rule.py",
                                  "tests/triggers/test_repeat.py",
                                  "tests/triggers/test_kinds.py",
                                  "tests/triggers/test_user_filter.py",
                                  "tests/triggers/test_engine.py",
                                  "tests/triggers/test_explain.py"), 0.90),
    "triggers/kinds/absence.py": (("tests/triggers/test_absence_rule.py",
                                   "tests/triggers/test_absence.py",
                                   "tests/triggers/test_kinds.py",
                                   "tests/triggers/test_user_filter.py",
                                   "tests/triggers/test_engine.py",
                                   "tests/triggers/test_merge_states.py",
                                   "tests/triggers/test_explain.py"), 0.90),
    "triggers/kinds/arrival.py": (("tests/triggers/test_arrival_rule.py",
                                   "tests/triggers/test_arrival.py",
                                   "tests/triggers/test_user_filter.py",
                                   "tests/triggers/test_kinds.py"), 0.90),
    "triggers/kinds/sequence.py": (("tests/triggers/test_sequence_rule.py",
                                    "tests/triggers/test_sequence.py",
                                    "tests/triggers/test_kinds.py",
                                    "tests/triggers/test_merge_states.py",
                                    "tests/triggers/test_explain.py"), 0.90),
    # The words every kind's explanation shares (the plural of an event type,
    # its article, the clock): a change here changes each kind's stories,
    # which the kinds' own runs never mutate. Against the kinds' rule tests
    # and explain's.
    "triggers/kinds/explaining.py": (("tests/triggers/test_explain.py",
                                      "tests/triggers/test_kinds.py",
                                      "tests/triggers/test_absence_rule.py",
                                      "tests/triggers/test_sequence_rule.py",
                                      "tests/triggers/test_repeat_rule.py",
                                      "tests/triggers/test_arrival_rule.py"), 0.90),
    # Erasure's tests all need a redis-server: one per pytest run (about 1 s).
    # The cluster's last (its 6 nodes take 16 s): only it sees a cross-slot
    # transaction fail; -x, so only the mutants the others miss reach it.
    "scenetrigger/ops/erasure.py": (("tests/scenetrigger/test_erasure_contract.py",
                                     "tests/scenetrigger/test_erase_receipt_first.py",
                                     "tests/scenetrigger/test_erase_every_byte.py",
                                     "tests/scenetrigger/test_erase_lookalikes.py",
                                     "tests/scenetrigger/test_ads_erasure_review.py",
                                     "tests/scenetrigger/test_ads_erasure.py",
                                     "tests/config/test_hash_keys.py",
                                     "tests/channels/test_redis_cluster.py"), 0.90),
    # The one check of an erasure receipt: whether an erased user's data is
    # put back (journeys, scenetrigger profiles, console, explain). Redis
    # tests first (about 1 s each); the profiles consumer's last (a Kafka
    # broker, about 15 s). explain --broker's live test (45 s) is left out:
    # it reads the receipt through the same erased_at the others check.
    "channels/erasure_receipts.py": (("tests/scenetrigger/test_erasure_contract.py",
                                      "tests/config/test_hash_keys.py",
                                      "tests/scenetrigger/test_erase_receipt_first.py",
                                      "tests/strategies/test_erased_triggers.py",
                                      "tests/scenetrigger/test_profiles_command.py"), 0.95),
}


# Modules whose tests that count need a service the fixtures start themselves
# (aiohttp on loopback for the webhook's sending side, a redis-server and a
# Redis Cluster for erasure, and a Kafka broker for the profiles consumer that
# checks erasure receipts): their runner takes the integration tests too.
LOOPBACK_OK = {"channels/transports/webhook.py", "scenetrigger/ops/erasure.py",
               "channels/erasure_receipts.py"}


@dataclass
class Survivor:
    line: int
    before: str
    after: str
    equivalent: str | None = None  # the listed reason, when listed


@dataclass
class ModuleScore:
    module: str
    mutants: int
    killed: int
    goal: float
    seconds: float
    survivors: list[Survivor] = field(default_factory=list)

    @property
    def equivalent(self) -> int:
        return sum(1 for s in self.survivors if s.equivalent is not None)

    @property
    def score(self) -> float:
        real = self.mutants - self.equivalent
        return 1.0 if real <= 0 else self.killed / real

    @property
    def met(self) -> bool:
        return self.score >= self.goal


def load_equivalents() -> dict[tuple[str, str, str], str]:
    """(module, line before, line after) -> why the mutant is equivalent."""
    if not EQUIVALENTS.exists():
        return {}
    entries = json.loads(EQUIVALENTS.read_text(encoding="utf-8"))
    return {(e["module"], e["before"].strip(), e["after"].strip()): e["why"] for e in entries}


def mutmut(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "mutmut", *args], cwd=REPO, text=True,  # noqa: S603
                          capture_output=True, check=False)


def diff_lines(shown: str) -> tuple[str, str]:
    """The removed and added line of ``mutmut show ID``'s unified diff."""
    before = [ln[1:] for ln in shown.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    after = [ln[1:] for ln in shown.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " | ".join(s.strip() for s in before), " | ".join(s.strip() for s in after)


def _pyc_glob(module: str) -> str:
    """A shell glob for the bytecode of ``module`` (a path under the repo)."""
    path = REPO / module
    return f"{path.parent / '__pycache__' / path.stem}.*.pyc"


def run_module(python: str, module: str, tests: tuple[str, ...], goal: float,
               equivalents: dict[tuple[str, str, str], str],
               resume: bool = False) -> ModuleScore:
    if not resume:
        (REPO / ".mutmut-cache").unlink(missing_ok=True)
    marker = "" if module in LOOPBACK_OK else "-m 'not integration' "
    # mutmut turns bytecode off for every run, so pytest re-rewrote every test
    # module each time (most of a run's wall time). Bytecode on, except the
    # mutated module's: its .pyc is removed before each run, since a mutant
    # may keep the file's size and second, which is all a .pyc is checked by.
    stale = _pyc_glob(module)
    script = (f"rm -f {stale} && exec env -u PYTHONDONTWRITEBYTECODE "
              f"{python} -m pytest -x -q -p no:cacheprovider {marker}{' '.join(tests)}")
    runner = f"sh -c {shlex.quote(script)}"  # mutmut splits the runner; no shell of its own
    started = time.monotonic()
    run = mutmut(python, "run", "--paths-to-mutate", module, "--runner", runner, "--no-progress")
    if run.returncode & 1:
        raise SystemExit(f"mutate: mutmut failed on {module}:\n{run.stdout[-2000:]}"
                         f"{run.stderr[-2000:]}")
    subprocess.run(f"rm -f {stale}", shell=True, check=False)  # noqa: S602 (the restored source's)
    report = ET.fromstring(mutmut(python, "junitxml").stdout)  # noqa: S314
    suite = report.find("testsuite")
    assert suite is not None
    total = int(suite.get("tests", "0"))
    survivors = []
    for case in suite.findall("testcase"):
        if case.find("failure") is None:
            continue
        number = re.sub(r"\D", "", case.get("name", ""))
        before, after = diff_lines(mutmut(python, "show", number).stdout)
        # Stripped as the listed ones are (a diff of two lines may end in " | ").
        why = equivalents.get((module, before.strip(), after.strip()))
        survivors.append(Survivor(int(case.get("line", "0")), before, after, why))
    return ModuleScore(module, total, total - len(survivors), goal,
                       round(time.monotonic() - started, 1), survivors)


def changed_modules(modules: list[str], ref: str) -> list[str]:
    """The ``modules`` whose file, or a test file of whose runner, differs from
    ``ref`` (committed or not): the ones a change can have weakened."""
    diff = subprocess.run(["git", "diff", "--name-only", ref, "--"], cwd=REPO,  # noqa: S603, S607
                          text=True, capture_output=True, check=False)
    if diff.returncode != 0:
        raise SystemExit(f"mutate: git diff {ref} failed: {diff.stderr.strip()}")
    changed = set(diff.stdout.split())
    return [m for m in modules
            if m in changed or any(t == c or c.startswith(t.rstrip("/") + "/")
                                   for t in CONTRACTS[m][0] for c in changed)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=sorted(CONTRACTS),
                        help="only this contract module (repeatable; default: all)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter with the project and mutmut installed")
    parser.add_argument("--changed-since", metavar="REF",
                        help="only the contract modules that differ from git REF (the module "
                             "or one of its test files; CI: the merge base of a change)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the results of an interrupted run of one module (mutmut "
                             "tests again only what it had not, while the tests are unchanged)")
    parser.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    args = parser.parse_args(argv)
    modules = args.module or sorted(CONTRACTS)
    if args.changed_since:
        modules = changed_modules(modules, args.changed_since)
        print(f"mutate: changed since {args.changed_since}: {', '.join(modules) or 'none'}",
              file=sys.stderr, flush=True)
    equivalents = load_equivalents()
    scores = []
    for module in modules:
        tests, goal = CONTRACTS[module]
        print(f"mutate: {module} against {' '.join(tests)} ...", file=sys.stderr, flush=True)
        score = run_module(args.python, module, tests, goal, equivalents,
                           resume=args.resume and len(modules) == 1)
        print(f"mutate: {module}: {score.killed}/{score.mutants} killed, "
              f"{score.equivalent} listed equivalent, score {score.score:.1%} "
              f"(goal {score.goal:.0%}) in {score.seconds:.0f} s", file=sys.stderr, flush=True)
        scores.append(score)
    (REPO / ".mutmut-cache").unlink(missing_ok=True)
    if args.json:
        print(json.dumps([{**asdict(s), "score": round(s.score, 4), "met": s.met}
                          for s in scores], indent=2))
    else:
        for s in scores:
            print(f"{s.module:32} {s.killed:4}/{s.mutants:<4} equivalent {s.equivalent:3}  "
                  f"score {s.score:6.1%}  goal {s.goal:.0%}  {'ok' if s.met else 'SHORT'}")
            for v in s.survivors:
                if v.equivalent is None:
                    print(f"    survived line {v.line}: {v.before!r} -> {v.after!r}")
    return 0 if all(s.met for s in scores) else 2


if __name__ == "__main__":
    sys.exit(main())
