"""Control groups: a deterministic hash of (strategy or scene, user) holds a
configured share of users out. The same user is in the same group on every
worker, every replay and every report, with no state to store.

The global control group is drawn first, by the user alone (the name
``GLOBAL``, which no scene or strategy can carry): its users get no scene
message and enter no strategy. Scene and strategy holdouts are drawn among the
others by (name, user); different names hash independently, so a scene's and
a strategy's holdouts are orthogonal (docs/measurement.md)."""

from __future__ import annotations

import hashlib

from config.strategy_models import ControlModel

_SCALE = float(1 << 64)


def bucket(salt: str, name: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, name, user)."""
    digest = hashlib.blake2b(f"{salt}\x1f{name}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def share_for(control: ControlModel, name: str, override: float | None = None) -> float:
    if override is not None:
        return override
    return control.per.get(name, control.share)


def in_control(control: ControlModel, name: str, user_id: str,
               override: float | None = None) -> bool:
    share = share_for(control, name, override)
    return share > 0.0 and bucket(control.salt, name, user_id) < share


GLOBAL = "*"  # the global control group's name in the hash (not a valid scene name)
GLOBAL_CONTROL = "global_control"  # the suppression reason of its users


def in_global_control(control: ControlModel, user_id: str) -> bool:
    """``blake2b(salt \x1f * \x1f user) < global_share``: held out of everything."""
    share = control.global_share
    return share > 0.0 and bucket(control.salt, GLOBAL, user_id) < share
