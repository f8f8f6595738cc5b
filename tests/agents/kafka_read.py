"""Read a whole topic back in tests (the product's :mod:`agents.export`)."""

from __future__ import annotations

import uuid

from agents.export import read_topic

__all__ = ["read_topic", "unique_topic"]


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
