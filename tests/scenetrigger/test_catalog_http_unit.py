"""POST /catalog's token and body rules with a recording publisher (the
Kafka side is tests/scenetrigger/test_catalog_live.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from agents.catalog_stream import CatalogSummary, Decoded
from scenetrigger.cli.main import main
from scenetrigger.serve.catalog_http import add_catalog_route
from tests.channels.receivers import serve_app
from triggers.errors import EventRejected


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[Decoded]] = []

    async def __call__(self, items: Sequence[Decoded],
                       on_reject: Callable[[str], None]) -> CatalogSummary:
        self.calls.append(list(items))
        summary = CatalogSummary(topic="t", dead_letter_topic="d")
        for _, item, _ in items:
            if isinstance(item, EventRejected):
                summary.rejected += 1
                summary.reasons[item.reason] += 1
                on_reject(item.reason)
            else:
                summary.sent += 1
        return summary


async def post(app: web.Application, body: bytes, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with serve_app(app) as base, aiohttp.ClientSession() as http, \
            http.post(f"{base}/catalog", data=body, headers=headers) as resp:
        return resp.status, await resp.text()


def app_with(token: str | None, publish: Recorder | None) -> web.Application:
    app = web.Application()
    add_catalog_route(app, token, publish, 256, CollectorRegistry())
    return app


async def test_closed_without_a_token_and_nothing_sent_on_a_wrong_one() -> None:
    record = b'{"v":1,"product_id":"a","price_cents":1}'
    recorder = Recorder()
    assert (await post(app_with(None, recorder), record, "anything"))[0] == 403
    assert (await post(app_with("", recorder), record, ""))[0] == 403
    for given in (None, "wrong", "secret-but-longer"):
        assert (await post(app_with("secret", recorder), record, given))[0] == 401
    assert recorder.calls == []
    assert (await post(app_with("secret", None), record, "secret"))[0] == 503
    assert (await post(app_with("secret", recorder), record, "secret"))[0] == 200
    assert len(recorder.calls) == 1


async def test_a_body_that_is_not_json_is_one_dead_letter() -> None:
    recorder = Recorder()
    status, text = await post(app_with("secret", recorder), b"{oops", "secret")
    assert status == 422 and '"invalid_json":1' in text.replace(" ", "")
    [[(where, item, raw)]] = recorder.calls
    assert (where, raw) == (0, b"{oops") and isinstance(item, EventRejected)


def test_load_refuses_a_csv_with_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    csv = tmp_path / "products.csv"
    csv.write_text("product_id,name,price\n1,Shoe,9.99\n")
    assert main(["catalog", "load", str(csv), "--broker", "127.0.0.1:1"]) == 1
    assert "JSONL catalog records" in capsys.readouterr().err
