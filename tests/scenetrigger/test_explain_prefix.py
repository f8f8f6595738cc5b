"""``explain --broker`` tells a topic prefix that does not exist (a typo)
apart from a user with no records, on a real Kafka."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from agents.producer import ensure_topics
from tests.services import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def explain(bootstrap: str, prefix: str, user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "explain", user,
                           "--broker", bootstrap, "--topic-prefix", prefix, "--timeout", "20"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_a_mistyped_prefix_is_not_a_user_without_records(kafka_bootstrap: str) -> None:
    prefix = f"shop{uuid.uuid4().hex[:8]}"
    # A shared cluster: a dozen other prefixes sort before it, over the ten listed.
    others = [f"a{n:02d}{uuid.uuid4().hex[:6]}.events" for n in range(12)]
    asyncio.run(ensure_topics(kafka_bootstrap, [f"{prefix}.events", f"{prefix}.triggers",
                                                *others], 1))

    known = explain(kafka_bootstrap, prefix, "bob")
    assert known.returncode == 0, known.stderr
    assert "nothing is recorded for user 'bob'" in known.stdout

    typo = explain(kafka_bootstrap, prefix + "x", "bob")
    assert typo.returncode == 1
    assert "nothing is recorded" not in typo.stdout
    assert f"no topic {prefix}x.events" in typo.stderr
    assert "no such topic or prefix" in typo.stderr
    # The prefixes that do exist, to pick from: the one closest to the typo first.
    assert typo.stderr.index(repr(prefix)) < min(
        typo.stderr.index(repr(o[:-len(".events")])) for o in others
        if repr(o[:-len(".events")]) in typo.stderr)
    assert "Traceback" not in typo.stderr
