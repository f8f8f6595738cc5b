"""``scenetrigger preview``: every variant rendered in full for a profile
from recorded events or a synthetic one, without Redis; the variant it marks
as chosen is the one a replay with delivery sends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from config.content_models import default_content

CLI = Path(sys.executable).with_name("scenetrigger")
NOON = 1_569_931_200_000  # 2019-10-01 12:00 UTC: outside the default quiet hours


def cli(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run([str(CLI), *map(str, args)], capture_output=True, timeout=120,
                          check=False, env={"PATH": "/usr/bin:/bin"})  # no Redis anywhere
    return done


def preview(*args: str | Path) -> dict[str, Any]:
    done = cli("preview", *args, "--json")
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def test_synthetic_profile_renders_every_variant_in_full() -> None:
    result = preview("repeat_view_no_purchase", "--style", "search_driven", "--segment",
                     "loyal", "--locale", "zh-CN")
    content = default_content().scenes["repeat_view_no_purchase"]
    names = [v["variant"] for v in result["variants"]]
    # zh-CN: the shipped scene's Chinese fallback (docs/audiences.md, "Locale")
    assert sorted(names) == sorted([*(v.name for v in content.variants),
                                    f"{content.fallback.name}_zh"])
    assert sum(v["chosen"] for v in result["variants"]) == 1
    for variant in result["variants"]:
        model = next((m for m in content.variants if m.name == variant["variant"]), None)
        assert variant["subject"] and variant["text"]
        assert "${" not in variant["subject"] + variant["text"] + (variant["html"] or "")
        assert (variant["html"] is None) == (model is None or model.html is None)
    chosen = next(v for v in result["variants"] if v["chosen"])
    model = next(m for m in content.variants if m.name == chosen["variant"])
    # the most specific matching variant: it names the segment or style given
    assert "loyal" in (model.when.segment or []) or "search_driven" in (model.when.style or [])
    assert "Sample product" in chosen["subject"] + chosen["text"]
    assert (result["style"], result["segment"], result["locale"]) == (
        "search_driven", "loyal", "zh-CN")


def test_a_replayed_user_gets_the_variant_replay_sends(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in [
        {"user_id": "u1", "ts": NOON + i * 60_000, "type": "view", "product_id": "p1",
         "category": "shoes"} for i in range(3)]))
    catalog = tmp_path / "products.csv"
    catalog.write_text("product_id,name,price,url,category\n"
                       "p1,Red Shoe,59.90,https://shop.example/p1,shoes\n")
    out = tmp_path / "triggers.jsonl"
    done = cli("replay", events, "--deliver", "dry-run", "--catalog", catalog, "--out", out,
               "--no-progress")
    assert done.returncode == 0, done.stderr.decode()
    (line,) = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert line["delivery"] == "delivered"
    result = preview("repeat_view_no_purchase", "--events", events, "--user", "u1",
                     "--catalog", catalog)
    chosen = next(v for v in result["variants"] if v["chosen"])
    assert (chosen["variant"], chosen["subject"]) == (line["variant"], line["subject"])
    assert "Red Shoe" in chosen["subject"] + chosen["text"]
    assert result["key"] == "p1"


def test_journey_content_and_unknown_names() -> None:
    result = preview("reactivation_push_1", "--journey", "--segment", "champion")
    assert result["variants"][-1]["fallback"] is True
    assert any(v["chosen"] for v in result["variants"])
    done = cli("preview", "repeat_view")
    assert done.returncode == 1
    assert b"did you mean 'repeat_view_no_purchase'?" in done.stderr
    human = cli("preview", "cart_abandonment", "--segment", "champion").stdout.decode()
    assert "CHOSEN" in human and "subject:" in human and "html:" in human
    # without --catalog the sample product is shown, and what that means elsewhere
    assert "Without a catalog, replay and deliver\n skip a variant that needs products" in human
