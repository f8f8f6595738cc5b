"""Predicates: a mapping of field -> condition, all of which must hold.

A condition is a scalar (equal, compared as strings), ``{in: [...]}``,
``{prefix: "..."}`` or both. A missing field (absent or null) never matches.
Predicates are compiled once into plain closures: they run for every event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

Fields = Mapping[str, Any]
Matcher = Callable[[Fields], bool]


def as_compared_string(value: Any) -> str | None:
    """How a value is compared: strings as they are, integers in decimal,
    booleans as ``true``/``false``, floats by their shortest repr; null is missing."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:  # deeper than JSON is written: compares as missing
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    """One field's condition. ``equals``, ``one_of`` and ``prefix`` all must hold where set."""

    equals: str | None = None
    one_of: frozenset[str] | None = None
    prefix: str | None = None

    def holds(self, value: Any) -> bool:
        text = as_compared_string(value)
        if text is None:
            return False
        if self.equals is not None and text != self.equals:
            return False
        if self.one_of is not None and text not in self.one_of:
            return False
        return self.prefix is None or text.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class Predicate:
    """A compiled predicate. ``fields`` keeps the source for display."""

    conditions: tuple[tuple[str, Condition], ...]

    @property
    def matches_all(self) -> bool:
        return not self.conditions

    def compile(self) -> Matcher:
        """A fast closure for the hot path; the common single-equality case
        avoids the generic loop."""
        conds = self.conditions
        if not conds:
            return _always
        if len(conds) == 1:
            name, cond = conds[0]
            if cond.one_of is None and cond.prefix is None and cond.equals is not None:
                target = cond.equals

                def eq_one(fields: Fields) -> bool:
                    value = fields.get(name)
                    if type(value) is str:
                        return value == target
                    return as_compared_string(value) == target

                return eq_one
            if cond.one_of is None and cond.equals is None and cond.prefix is not None:
                start = cond.prefix

                def prefix_one(fields: Fields) -> bool:
                    value = fields.get(name)
                    if type(value) is str:
                        return value.startswith(start)
                    text = as_compared_string(value)
                    return text is not None and text.startswith(start)

                return prefix_one
            holds = cond.holds
            return lambda fields: holds(fields.get(name))

        def all_hold(fields: Fields) -> bool:
            return all(cond.holds(fields.get(name)) for name, cond in conds)

        return all_hold


def _always(fields: Fields) -> bool:
    return True


def parse_predicate(raw: Any) -> Predicate:
    """Build a predicate from its config form, or raise ValueError naming the field."""
    if raw is None:
        return Predicate(())
    if not isinstance(raw, Mapping):
        raise ValueError("a predicate must be a mapping of field -> condition")
    conditions: list[tuple[str, Condition]] = []
    for name, spec in raw.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"predicate field names must be non-empty strings (got {name!r})")
        conditions.append((name, _parse_condition(name, spec)))
    return Predicate(tuple(conditions))


def _parse_condition(name: str, spec: Any) -> Condition:
    if isinstance(spec, Mapping):
        unknown = sorted(str(k) for k in spec if k not in ("in", "prefix"))
        if unknown:
            raise ValueError(
                f"field {name!r}: unknown condition {', '.join(unknown)} (use in, prefix)"
            )
        if not spec:
            raise ValueError(f"field {name!r}: an empty condition; use in and/or prefix")
        one_of: frozenset[str] | None = None
        prefix: str | None = None
        if "in" in spec:
            values = spec["in"]
            if not isinstance(values, list):
                raise ValueError(f"field {name!r}: 'in' takes a list of values")
            one_of = frozenset(_scalar(name, v) for v in values)
        if "prefix" in spec:
            if not isinstance(spec["prefix"], str):
                raise ValueError(f"field {name!r}: 'prefix' takes a string")
            prefix = spec["prefix"]
        return Condition(one_of=one_of, prefix=prefix)
    return Condition(equals=_scalar(name, spec))


def _scalar(name: str, value: Any) -> str:
    if value is None:
        raise ValueError(f"field {name!r}: null is not a condition (a null field counts as missing)")
    if not isinstance(value, (str, int, float)):
        raise ValueError(
            f"field {name!r}: a condition value must be a string, number or boolean "
            f"(got {type(value).__name__}; quote identifiers and dates)"
        )
    text = as_compared_string(value)
    assert text is not None
    return text
