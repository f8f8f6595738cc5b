"""One tag condition and its one evaluator: ``all`` must all hold, at least
one of ``any`` (when stated), none of ``none``. A scene's user filter, a
strategy's entry and a content variant's ``when`` all ask this."""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TagCondition:
    """``any`` None states nothing; an empty ``any`` never holds (a variant's
    ``tags_any: []`` matches no one, as it always did)."""

    all: frozenset[str] = frozenset()
    any: frozenset[str] | None = None
    none: frozenset[str] = frozenset()

    @classmethod
    def of(cls, all: Iterable[str] | None = None, any: Iterable[str] | None = None,
           none: Iterable[str] | None = None) -> TagCondition:
        return cls(frozenset(all or ()), None if any is None else frozenset(any),
                   frozenset(none or ()))

    def holds(self, tags: Set[str]) -> bool:
        if not self.all <= tags or not self.none.isdisjoint(tags):
            return False
        return self.any is None or not self.any.isdisjoint(tags)

    @property
    def names(self) -> frozenset[str]:
        """Every tag the condition looks at."""
        return self.all | (self.any or frozenset()) | self.none
