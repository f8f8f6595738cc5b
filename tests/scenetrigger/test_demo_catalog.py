"""``scenetrigger demo --config config/demo-catalog.yaml`` as a user runs it:
catalog records sent to the demo's ``POST /api/catalog`` reach the shoppers
who viewed the product as back-in-stock and price-drop messages
(docs/demo.md, docs/catalog.md)."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest

from scenetrigger.demo.personas import CATALOG
from tests.scenetrigger.demo_process import REPO, http_get, start_demo

TOKEN = "demo-catalog-test-token"
CONFIG = REPO / "config" / "demo-catalog.yaml"
NAMES = {p.name for p in CATALOG.values()}

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def post(url: str, body: Any, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=orjson.dumps(body), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, orjson.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()}


def records(stock: int, share: float) -> list[dict[str, Any]]:
    """Every demo product at ``share`` of its list price with ``stock`` units."""
    return [{"v": 1, "product_id": p.product_id, "category": p.category,
             "price_cents": round(p.price * 100 * share),
             "variants": {"one": {"stock": stock}}} for p in CATALOG.values()]


def test_a_catalog_change_reaches_the_shoppers_who_viewed_the_product(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENETRIGGER_CATALOG_TOKEN", TOKEN)
    demo = start_demo("--config", str(CONFIG), "--strategies", "none", "--duration", "30",
                      "--speed", "600")
    try:
        url = demo.wait_ready()
        assert any(line.strip().startswith("catalog") and "api/catalog" in line
                   and "$SCENETRIGGER_CATALOG_TOKEN" in line for line in demo.lines), demo.output()
        deadline = time.monotonic() + 30
        while orjson.loads(http_get(url + "api/state")[2])["events"] < 200:
            assert time.monotonic() < deadline, demo.output()
            time.sleep(0.2)
        endpoint = url + "api/catalog"
        assert post(endpoint, records(0, 1.0)[0], token=None)[0] == 401
        assert post(endpoint, records(0, 1.0)[0], token="wrong")[0] == 401
        # The first record of a product is its baseline: out of stock, list price.
        status, answer = post(endpoint, records(0, 1.0))
        assert status == 200 and answer["applied"] == len(CATALOG), answer
        # Back in stock and 30 % cheaper; one bad record is refused with its reason.
        bad = {"v": 1, "product_id": "x", "price_cents": -1}
        status, answer = post(endpoint, [*records(5, 0.7), bad])
        assert status == 422, answer
        assert answer["applied"] == len(CATALOG) and answer["reasons"] == {"negative_price": 1}
        deadline = time.monotonic() + 30
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = orjson.loads(http_get(url + "api/state")[2])
            if state["triggers"].get("back_in_stock") and state["triggers"].get("price_drop"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no catalog trigger: {state}\n{demo.output()}")
        metrics = http_get(url + "metrics")[2].decode()
    finally:
        demo.stop()
    shown = [r for r in state["recent"] if r["scene"] in ("back_in_stock", "price_drop")]
    assert shown, state
    for record in shown:
        subject = record["content"][0]["subject"]
        name = re.sub(r"^Price drop: | is back in stock$", "", subject)
        assert name in NAMES and name != subject, record  # the product's own message
        # "release": a message held back by quiet hours, sent later
        assert record["persona"] != "unknown" and record["via"] in ("event", "release")
    assert re.search(r'^scenetrigger_catalog_rejected_total\{reason="negative_price"\} 1\.0$',
                     metrics, re.M), metrics
    assert re.search(rf"^scenetrigger_catalog_records_total {2 * len(CATALOG)}\.0$", metrics,
                     re.M), metrics
    out = demo.output()
    assert re.search(r"^\d\d:\d\d:\d\d  back_in_stock +u\d+", out, re.M), out
