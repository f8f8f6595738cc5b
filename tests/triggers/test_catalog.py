"""The catalog record (strict decoding), the diff against the last version
and the change events (docs/semantics-notes.md, "Catalog changes"), with a
Hypothesis property against a brute-force reference."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers.catalog import (
    BACK_IN_STOCK,
    NEW_ARRIVAL,
    PRICE_DROP,
    CatalogChange,
    CatalogRecord,
    Variant,
    catalog_changes,
    catalog_record_from_mapping,
    changed_records,
    decode_catalog_record,
)
from triggers.errors import EventRejected


def rec(pid: str = "p1", price: int = 1000, *, new: bool = False, category: str = "shoes",
        **variants: tuple[int, bool]) -> CatalogRecord:
    return CatalogRecord(pid, price, category, new, "",
                         tuple(sorted((k, Variant(*v)) for k, v in variants.items())))


def reason_of(obj: Any, max_id_chars: int = 256) -> str:
    with pytest.raises(EventRejected) as info:
        catalog_record_from_mapping(obj, max_id_chars)
    return info.value.reason


GOOD = {"v": 1, "product_id": "p1", "price_cents": 1999, "category": "shoes",
        "is_new": True, "name": "Trail shoe",
        "variants": {"43": {"stock": 0, "available": True}, "42": {"stock": 3}}}


def test_a_record_decodes_with_sorted_variants_and_round_trips() -> None:
    record = decode_catalog_record(orjson.dumps(GOOD))
    assert record == CatalogRecord("p1", 1999, "shoes", True, "Trail shoe",
                                   (("42", Variant(3, True)), ("43", Variant(0, True))))
    assert decode_catalog_record(record.to_json()) == record
    assert record.variant_map()["42"].in_stock and not record.variant_map()["43"].in_stock


def test_only_the_required_fields() -> None:
    assert decode_catalog_record(b'{"v":1,"product_id":"x","price_cents":0}') == \
        CatalogRecord("x", 0)


@pytest.mark.parametrize(("change", "reason"), [
    ({"price_cents": -1}, "negative_price"),
    ({"prize_cents": 5}, "unknown_field"),
    ({"variants": {"42": {"stock": 1, "colour": "red"}}}, "unknown_field"),
    ({"variants": {"42": {"stock": -2}}}, "negative_stock"),
    ({"product_id": "p" * 257}, "too_long"),
    ({"variants": {"v" * 257: {"stock": 1}}}, "too_long"),
    ({"category": "c" * 257}, "too_long"),
    ({"price_cents": 19.99}, "wrong_type"),
    ({"price_cents": "1999"}, "wrong_type"),
    ({"price_cents": True}, "wrong_type"),
    ({"is_new": 1}, "wrong_type"),
    ({"product_id": 7}, "wrong_type"),
    ({"variants": {"42": {"available": "yes"}}}, "wrong_type"),
    ({"v": 2}, "bad_version"),
    ({"product_id": ""}, "missing_field"),
])
def test_bad_records_are_refused_with_their_reason(change: dict[str, Any], reason: str) -> None:
    assert reason_of({**GOOD, **change}) == reason


def test_missing_fields_and_non_objects() -> None:
    for name in ("v", "product_id", "price_cents"):
        assert reason_of({k: v for k, v in GOOD.items() if k != name}) == "missing_field"
    assert reason_of([GOOD]) == "not_object"
    with pytest.raises(EventRejected) as info:
        decode_catalog_record(b"{not json")
    assert info.value.reason == "invalid_json"


def test_the_id_limit_is_the_one_given() -> None:
    assert reason_of({**GOOD, "product_id": "p" * 21}, max_id_chars=20) == "too_long"
    assert catalog_record_from_mapping({**GOOD, "product_id": "p" * 20}, 20).product_id == "p" * 20


def test_the_diff_sends_only_changed_and_new_products_once() -> None:
    last = {"a": rec("a"), "b": rec("b"), "c": rec("c")}
    new = [rec("a"), rec("b", 900), rec("d"), rec("b", 800)]
    # b twice in the file: its last record counts; c absent: untouched.
    assert changed_records(last, new) == [rec("b", 800), rec("d")]
    assert changed_records(last, [rec("a"), rec("c")]) == []


def test_changes_of_one_product() -> None:
    before = rec(price=2000, s=(0, True), m=(5, True), l=(3, False), xl=(0, True))
    after = rec(price=1500, s=(2, True), m=(4, True), l=(3, True), xl=(0, True), xxl=(9, True),
                new=True)
    assert catalog_changes(before, after) == [
        CatalogChange(BACK_IN_STOCK, "p1", variant="l", category="shoes"),
        CatalogChange(BACK_IN_STOCK, "p1", variant="s", category="shoes"),
        CatalogChange(PRICE_DROP, "p1", old_price_cents=2000, new_price_cents=1500,
                      drop_bp=2500, category="shoes"),
        CatalogChange(NEW_ARRIVAL, "p1", category="shoes"),
    ]
    assert catalog_changes(before, after)[2].drop_percent == 25.0


def test_a_first_record_is_at_most_a_new_arrival() -> None:
    assert catalog_changes(None, rec(s=(3, True))) == []
    assert catalog_changes(None, rec(new=True)) == [CatalogChange(NEW_ARRIVAL, "p1",
                                                                  category="shoes")]


def test_no_change_is_named_twice_or_backwards() -> None:
    after = rec(price=999, new=True, s=(1, True))
    assert catalog_changes(after, after) == []
    assert catalog_changes(rec(price=999, s=(1, True)), rec(price=1000, s=(0, True))) == []
    # 1 cent off 3 cents is 33.33 %: rounded down to 3333 basis points.
    assert catalog_changes(rec(price=3), rec(price=2))[0].drop_bp == 3333
    with pytest.raises(ValueError, match="different products"):
        catalog_changes(rec("a"), rec("b"))


# -- property: the change function equals a brute-force reading of the definition

def reference(prev: CatalogRecord | None, cur: CatalogRecord) -> list[CatalogChange]:
    out = []
    if prev is not None:
        old_variants = dict(prev.variants)
        new_variants = dict(cur.variants)
        for vid in sorted(set(old_variants) | set(new_variants)):
            if vid not in old_variants or vid not in new_variants:
                continue
            was = old_variants[vid].available and old_variants[vid].stock >= 1
            now = new_variants[vid].available and new_variants[vid].stock >= 1
            if not was and now:
                out.append(CatalogChange(BACK_IN_STOCK, cur.product_id, variant=vid,
                                         category=cur.category))
        if cur.price_cents < prev.price_cents:
            share = Fraction(prev.price_cents - cur.price_cents, prev.price_cents)
            out.append(CatalogChange(PRICE_DROP, cur.product_id,
                                     old_price_cents=prev.price_cents,
                                     new_price_cents=cur.price_cents,
                                     drop_bp=math.floor(share * 10_000), category=cur.category))
    if cur.is_new and not (prev is not None and prev.is_new):
        out.append(CatalogChange(NEW_ARRIVAL, cur.product_id, category=cur.category))
    return out


variants = st.dictionaries(st.sampled_from(["s", "m", "l", "42", "43"]),
                           st.builds(Variant, st.integers(0, 3), st.booleans()), max_size=5)
records = st.builds(
    lambda price, new, cat, vs: CatalogRecord("p", price, cat, new, "",
                                              tuple(sorted(vs.items()))),
    st.integers(0, 10_000), st.booleans(), st.sampled_from(["", "shoes"]), variants)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.none() | records, records)
def test_changes_equal_the_reference(prev: CatalogRecord | None, cur: CatalogRecord) -> None:
    assert catalog_changes(prev, cur) == reference(prev, cur)
    assert decode_catalog_record(cur.to_json()) == cur


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from("abcd"), st.integers(0, 3)),
       st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 3))))
def test_the_diff_equals_the_reference(last_prices: dict[str, int],
                                       new: list[tuple[str, int]]) -> None:
    last = {pid: rec(pid, price) for pid, price in last_prices.items()}
    expected = []
    for pid in dict.fromkeys(p for p, _ in new):  # first-seen order
        final = [price for p, price in new if p == pid][-1]
        if pid not in last_prices or last_prices[pid] != final:
            expected.append(rec(pid, final))
    assert changed_records(last, [rec(p, price) for p, price in new]) == expected
