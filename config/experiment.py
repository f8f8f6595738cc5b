"""Live experiments on config (issue 24.6): a candidate version runs for a
hash-chosen share of users while everyone else keeps the base version.

``config push FILE --experiment 10%`` stores the candidate as the next
version, marked with its experiment (the base version it is measured
against, the share, the horizon); every process following the store keeps
the base config in force and runs the candidate for the users
:func:`in_candidate` picks. ``config promote`` stores the candidate's text
again as a plain version (everyone runs it), ``config rollback`` the base's:
either ends the experiment. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from config.models import AppConfig
from triggers.errors import SceneTriggerError

SALT = "scenetrigger-config"
CANDIDATE, BASE = "candidate", "base"
MAX_SHARE = 0.5  # a candidate for more than half the users is a rollout, not a test
DEFAULT_HORIZON_MS = 14 * 86_400_000


def in_candidate(version: int, share: float, user_id: str) -> bool:
    """``blake2b(SALT \\x1f v<version> \\x1f user_id)``'s first 8 bytes, big
    endian, / 2^64 < share: keyed by the candidate's version, so each
    experiment draws its own users; no state, every process agrees."""
    digest = hashlib.blake2b(f"{SALT}\x1fv{version}\x1f{user_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def parse_share(text: str) -> float:
    """``10%`` or ``0.1`` -> 0.1; within (0, MAX_SHARE]."""
    raw = text.strip()
    try:
        share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise SceneTriggerError(f"--experiment: {text!r} is not a share (10% or 0.1)") from None
    if not 0.0 < share <= MAX_SHARE:
        raise SceneTriggerError(f"--experiment: the share must be above 0 and at most "
                                f"{MAX_SHARE:.0%}, not {text}")
    return share


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """What a candidate version stores about its experiment."""

    base: int  # the version the candidate is measured against
    share: float
    horizon_ms: int  # fixed horizon: the report decides only after it

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "share": self.share, "horizon_ms": self.horizon_ms}

    @classmethod
    def from_dict(cls, raw: Any) -> ExperimentSpec:
        if not isinstance(raw, dict):
            raise ValueError("an experiment is a JSON object")
        return cls(int(raw["base"]), float(raw["share"]), int(raw["horizon_ms"]))


@dataclass(frozen=True)
class RunningExperiment:
    """The experiment in force in a process: the candidate's version and config."""

    version: int
    spec: ExperimentSpec
    candidate: AppConfig
    started_ms: int

    def takes(self, user_id: str) -> bool:
        return in_candidate(self.version, self.spec.share, user_id)

    def arm_of(self, user_id: str) -> str:
        return CANDIDATE if self.takes(user_id) else BASE
