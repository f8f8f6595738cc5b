"""bench/churn.py: its AUC is the Mann-Whitney statistic, and on users drawn
from the BG/NBD process it recovers the parameters and ranks who buys again."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.paths import REPO_ROOT as REPO


def _bench(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "churn.py"), *args, "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_auc_counts_ties_as_half() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from churn import auc
    finally:
        sys.path.remove(str(REPO / "bench"))
    assert auc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(
        (1 + 1 + 1 + 0.5) / 4)
    assert auc([0.1, 0.2], [True, True]) is None


def test_synthetic_users_give_back_the_model() -> None:
    result = _bench("--synthetic", "3000", "--seed", "11", "--fit")["results"][0]
    model = result["model"]
    assert model["fitted"] is True
    # the truth is the default (CDNOW) parameters; a fit on 3,000 users lands near them
    assert 0.15 < model["r"] < 0.35 and 15 < model["alpha"] < 50
    assert result["auc_p_active"] > 0.65
    assert result["bought_again"] > 100 and result["did_not"] > 100


def test_shared_samples_report_their_counts() -> None:
    results = _bench()["results"]
    assert [r["file"] for r in results] == [
        "rees46-2019-10-01-sample.csv", "otto-sample.jsonl"]
    for r in results:
        assert r["buyers_before_cut"] == r["bought_again"] + r["did_not"]
        assert r["meaningful"] is False  # too small: said so, not hidden
