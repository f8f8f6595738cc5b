"""Redis key names as docs/deploy.md documents them, computed here from the
formula (crc32 of the user id modulo the bucket count; ``{user}`` hash tags),
not by the code under test."""

from __future__ import annotations

import zlib

LEASE_BUCKETS = 16  # docs/deploy.md: sixteen pending buckets


def bucket_tag(user_id: str) -> str:
    return f"{{d{zlib.crc32(user_id.encode()) % LEASE_BUCKETS:02d}}}"


def pending_key(prefix: str, user_id: str) -> str:
    """The user's bucket of deferred and leased deliveries."""
    return f"{prefix}deferred:{bucket_tag(user_id)}"


def all_pending_keys(prefix: str) -> list[str]:
    return [f"{prefix}deferred:{{d{b:02d}}}" for b in range(LEASE_BUCKETS)]
