"""The one tag condition that scene filters, strategy entries and content
variants evaluate."""

from __future__ import annotations

from triggers.tagcondition import TagCondition


def test_all_any_none() -> None:
    cond = TagCondition.of(all=["a"], any=["b", "c"], none=["x"])
    assert cond.holds({"a", "b"})
    assert cond.holds({"a", "c", "z"})
    assert not cond.holds({"b", "c"})  # a missing
    assert not cond.holds({"a"})  # none of any
    assert not cond.holds({"a", "b", "x"})  # a forbidden one
    assert cond.names == {"a", "b", "c", "x"}


def test_an_absent_any_states_nothing_and_an_empty_one_never_holds() -> None:
    assert TagCondition().holds(set())
    assert TagCondition.of(any=None).holds({"q"})
    assert not TagCondition.of(any=[]).holds({"q"})
