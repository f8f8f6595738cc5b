"""Erasure receipts ``{p}erasure:{keyed hash of id}`` (written by
:meth:`scenetrigger.ops.erasure.Eraser.erase`): the one check of whether, and
when, a user was erased.

Kafka topics cannot drop one user's records, so every reader that would put
an erased user's data back asks it: explain ``--broker`` and the console drop
the records up to the erasure, the journeys (:mod:`strategies.service`)
ignore the triggers of up to then, and ``scenetrigger profiles``
(:mod:`channels.audience.live_profile_feed`) writes no profile of an erased
user. ``{p}`` is ``delivery.redis_prefix``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from channels.redis_client import get_many
from config.hash_keys import HashKeys

UNREADABLE = 1 << 62  # an unreadable receipt's time: erased, whatever came before


def receipt_key(prefix: str, user_id: str, keys: HashKeys | None = None) -> str:
    return receipt_key_of(prefix, (keys or HashKeys.from_env()).subject(user_id))


def receipt_key_of(prefix: str, subject: str) -> str:
    return f"{prefix}erasure:{subject}"


async def erased_at(redis: Any, prefix: str, user_ids: Collection[str],
                    keys: HashKeys | None = None) -> dict[str, int]:
    """Of these users, the erased ones and when (their receipts' time), in one
    read (each receipt under the current key, a previous one, or unkeyed)."""
    users = list(user_ids)
    if not users:
        return {}
    hashes = keys or HashKeys.from_env()
    forms = [hashes.subject_candidates(u) for u in users]
    width = len(forms[0])
    raws = await get_many(redis, [receipt_key_of(prefix, f) for group in forms for f in group])
    found: dict[str, int] = {}
    for n, user in enumerate(users):
        raw = next((r for r in raws[n * width:(n + 1) * width] if r is not None), None)
        if raw is not None:
            try:
                found[user] = int(orjson.loads(raw)["erased_at_ms"])
            except (ValueError, KeyError, TypeError):
                found[user] = UNREADABLE
    return found
