"""One set of Prometheus metrics per registry: registering the same metric
names twice in a registry fails, so each ``Metrics.on(registry)`` builds its
set once and hands the same one back afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerRegistry(Generic[T]):
    def __init__(self) -> None:
        # id() alone could be reused by a new registry after the old one is
        # gone: the registry is kept beside the value and compared by identity.
        self._items: dict[int, tuple[Any, T]] = {}

    def get(self, registry: Any, build: Callable[[], T]) -> T:
        found = self._items.get(id(registry))
        if found is not None and found[0] is registry:
            return found[1]
        made = build()
        self._items[id(registry)] = (registry, made)
        return made
