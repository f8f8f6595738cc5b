"""The embedded runtime (the demo's) runs the catalog scenes through the
join replay's ``--catalog-changes`` uses: on the catalog-plus-clickstream
stream of tests/fanout_sample.py it fires the same triggers as replay, and
both equal the brute-force reference; a record added while running (the
demo's ``POST /api/catalog``) takes effect at the simulated now."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from config.loader import load_config, validate_config
from scenetrigger.cli.main import main
from scenetrigger.runtime.catalog_join import CatalogJoin, new_side, read_history
from scenetrigger.runtime.embedded import EmbeddedRuntime
from scenetrigger.runtime.replay import new_host
from tests.fanout_sample import SCENES, START, reference
from tests.scenetrigger.test_replay_catalog import FAR, write_inputs
from triggers.catalog import CatalogRecord, catalog_record_from_mapping


def test_the_embedded_runtime_fires_what_replay_fires(tmp_path: Path) -> None:
    events_file, catalog, config_file, events, history = write_inputs(tmp_path)
    out = tmp_path / "triggers.jsonl"
    assert main(["replay", str(events_file), "--config", str(config_file), "--catalog-changes",
                 str(catalog), "--out", str(out), "--advance-to", str(FAR),
                 "--no-progress"]) == 0
    replayed = sorted((t["scene"], t["user_id"], t["key"], t["ts"])
                      for t in map(orjson.loads, out.read_bytes().splitlines()))

    config = load_config(str(config_file))
    with catalog.open("rb") as lines:
        join = CatalogJoin(new_side(config), read_history(lines))
    runtime = EmbeddedRuntime(new_host(config), events, start_ms=START, catalog=join)
    records = asyncio.run(runtime.step(FAR))
    embedded = sorted((r.trigger.scene, r.trigger.user_id, r.trigger.key, r.trigger.ts)
                      for r in records)
    assert embedded == replayed
    assert embedded == reference(events, history, SCENES)
    assert {t[0] for t in embedded} == set(SCENES)  # every rule is compared
    assert join.applied == len(history)


def test_a_record_added_while_running_notifies_who_viewed_the_product() -> None:
    config = validate_config({"catalog_interest": {"within": "1d", "views": 1},
                              "scenes": {"restock": {"kind": "back_in_stock"},
                                         "cheaper": {"kind": "price_drop", "min_percent": 10}}})
    views = [{"user_id": "u1", "ts": START + 1000, "type": "view", "product_id": "p1"},
             {"user_id": "u2", "ts": START + 2000, "type": "view", "product_id": "p2"}]
    runtime = EmbeddedRuntime(new_host(config), views, start_ms=START,
                              catalog=CatalogJoin(new_side(config)))

    def record(**fields: object) -> CatalogRecord:
        return catalog_record_from_mapping({"v": 1, "product_id": "p1", **fields})

    asyncio.run(runtime.step(START + 5000))
    # The product's first record is its baseline: no change, no message.
    runtime.add_catalog(record(price_cents=1000, variants={"a": {"stock": 0}}))
    assert asyncio.run(runtime.step(START + 6000)) == []
    runtime.stats.sim_ms = START + 7000  # the simulated now the next record takes
    ts = runtime.add_catalog(record(price_cents=800, variants={"a": {"stock": 3}}))
    assert ts == START + 7000
    fired = asyncio.run(runtime.step(START + 8000))
    assert sorted((r.trigger.scene, r.trigger.user_id, r.trigger.ts) for r in fired) == [
        ("cheaper", "u1", ts), ("restock", "u1", ts)]
