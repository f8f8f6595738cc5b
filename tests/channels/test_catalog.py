"""Catalog files, the Redis catalog (real server) and `scenetrigger catalog load`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from channels.content.catalog import (
    CatalogError,
    MemoryCatalog,
    Product,
    RedisCatalog,
    read_products,
)
from tests.channels.content_factories import catalog_products
from tests.paths import REES46_SAMPLE

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = REES46_SAMPLE


def test_csv_and_jsonl_files(tmp_path: Path) -> None:
    csv_file = tmp_path / "c.csv"
    csv_file.write_text(
        "product_id,name,price,url,category,is_new,discount\n"
        "1,Phone,199.99,https://s.example/1,phones,true,0\n"
        "2,,5,,phones,0,15\n",
        encoding="utf-8",
    )
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        '{"product_id": 1, "name": "Phone", "price": 199.99, "is_new": true}\n\n'
        '{"product_id": "2", "discount": 150}\n',
        encoding="utf-8",
    )
    a, b = read_products(csv_file)
    assert a == Product("1", "Phone", 19_999, "https://s.example/1", "", "phones", "", True, 0)
    assert (b.name, b.price_cents, b.discount) == ("Product 2", 500, 15)
    c, d = read_products(jsonl)
    assert (c.product_id, c.price_cents, c.is_new) == ("1", 19_999, True)
    assert d.discount == 100  # clamped


def test_bad_files_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"product_id": "1"}\n{"name": "no id"}\n', encoding="utf-8")
    with pytest.raises(CatalogError, match=r"bad.jsonl:2: product_id is missing"):
        read_products(bad)
    price = tmp_path / "p.csv"
    price.write_text("product_id,price\n1,abc\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="bad price"):
        read_products(price)
    with pytest.raises(CatalogError, match="cannot read"):
        read_products(tmp_path / "missing.csv")


def test_catalog_derived_from_rees46_events() -> None:
    products = read_products(SAMPLE)
    by_id = {p.product_id: p for p in products}
    phone = by_id["1004659"]
    assert phone.category == "electronics.smartphone" and phone.brand == "samsung"
    assert phone.name == "Samsung smartphone" and phone.price_cents > 0
    assert phone.url.endswith("/product/1004659")
    assert any(p.is_new for p in products) and any(p.discount for p in products)
    assert len(by_id) == len(products)


@pytest.mark.integration
async def test_redis_catalog_matches_the_memory_catalog(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    prefix = f"t{uuid.uuid4().hex[:8]}:cat:"
    try:
        redis_cat = RedisCatalog(client, prefix)
        products = catalog_products()
        assert await redis_cat.load(products) == len(products)
        memory = MemoryCatalog(products)
        ids = ["1004659", "nope", "3001"]
        assert await redis_cat.get_many(ids) == await memory.get_many(ids)
        for cat in ("electronics.smartphone", "none"):
            assert await redis_cat.in_category(cat, 2) == await memory.in_category(cat, 2)
        assert await redis_cat.hot(5) == await memory.hot(5)
        assert [p.product_id for p in await redis_cat.hot(5)] == ["3001", "3002"]
    finally:
        await client.aclose()


@pytest.mark.integration
def test_catalog_load_command(redis_url: str, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:cat:"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scenetrigger.cli.main",
            "catalog",
            "load",
            str(SAMPLE),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"loaded" in done.stderr

    async def lookup() -> dict[str, Product]:
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            return await RedisCatalog(client, prefix).get_many(["1004659"])
        finally:
            await client.aclose()

    assert asyncio.run(lookup())["1004659"].name == "Samsung smartphone"
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "scenetrigger.cli.main",
            "catalog",
            "load",
            str(tmp_path / "x.csv"),
            "--redis-url",
            redis_url,
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1 and b"cannot read" in failed.stderr
