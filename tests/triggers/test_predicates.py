"""Predicates: equality, `in`, `prefix`, both, empty; values compared as strings."""

from __future__ import annotations

from typing import Any

import pytest

from triggers.predicates import parse_predicate


def matches(pred: Any, fields: dict[str, Any]) -> bool:
    return parse_predicate(pred).compile()(fields)


@pytest.mark.parametrize(
    ("pred", "fields", "expected"),
    [
        ({"type": "view"}, {"type": "view"}, True),
        ({"type": "view"}, {"type": "views"}, False),
        ({"type": "view"}, {}, False),
        ({"type": "view"}, {"type": None}, False),  # null is missing
        ({"type": {"in": ["view", "cart"]}}, {"type": "cart"}, True),
        ({"type": {"in": ["view", "cart"]}}, {"type": "purchase"}, False),
        ({"type": {"in": []}}, {"type": "view"}, False),
        ({"page": {"prefix": "/promo"}}, {"page": "/promo/x"}, True),
        ({"page": {"prefix": "/promo"}}, {"page": "/pro"}, False),
        ({"page": {"prefix": "/promo"}}, {"page": None}, False),
        ({"page": {"prefix": ""}}, {"page": ""}, True),  # an empty string is a value
        ({"page": {"prefix": ""}}, {}, False),
        ({"page": {"in": ["/promo/a", "/b"], "prefix": "/promo"}}, {"page": "/promo/a"}, True),
        ({"page": {"in": ["/promo/a", "/b"], "prefix": "/promo"}}, {"page": "/b"}, False),
        ({"page": {"in": ["/promo/a", "/b"], "prefix": "/promo"}}, {"page": "/promo/c"}, False),
        ({}, {}, True),
        ({}, {"type": "anything"}, True),
        ({"type": "view", "page": "/x"}, {"type": "view", "page": "/x"}, True),
        ({"type": "view", "page": "/x"}, {"type": "view"}, False),
        ({"q": ""}, {"q": ""}, True),
        ({"q": ""}, {}, False),
        # numbers, booleans and floats compare by their string form
        ({"product_id": 1}, {"product_id": "1"}, True),
        ({"product_id": "1"}, {"product_id": 1}, True),
        ({"product_id": "01"}, {"product_id": 1}, False),
        ({"product_id": {"in": [1, 2]}}, {"product_id": "2"}, True),
        ({"price": 1.5}, {"price": "1.5"}, True),
        ({"price": 1.5}, {"price": 1.50}, True),
        ({"price": "1.50"}, {"price": 1.5}, False),
        ({"price": 2}, {"price": 2.0}, False),  # "2" != "2.0"
        ({"flag": True}, {"flag": "true"}, True),
        ({"flag": True}, {"flag": True}, True),
        ({"flag": True}, {"flag": 1}, False),
        ({"flag": "false"}, {"flag": False}, True),
        ({"id": {"prefix": "12"}}, {"id": 123}, True),
    ],
)
def test_conditions(pred: Any, fields: dict[str, Any], expected: bool) -> None:
    assert matches(pred, fields) is expected


@pytest.mark.parametrize(
    "pred",
    [
        "view",
        {"type": None},
        {"type": ["view"]},
        {"type": {"eq": "view"}},
        {"type": {}},
        {"type": {"in": "view"}},
        {"type": {"prefix": 3}},
        {"": "x"},
        {"type": {"in": [{"a": 1}]}},
    ],
)
def test_bad_predicates_are_refused(pred: Any) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_predicate(pred)


def test_absent_predicate_matches_everything() -> None:
    assert parse_predicate(None).matches_all
