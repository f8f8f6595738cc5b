"""The shipped defaults work together: ``make demo`` (the shipped config, the
shipped reactivation strategy, the dry-run pipeline, its accelerated clock)
sends every shipped scene's message and every journey step at least once, and
promo messages show products matched to the visitor.

It once did not: the journey's coupon step was held by cap_day in 28 of 40
sends and deferred in the other 12, both winback emails were capped (the
journey's waits were compressed, the policy's days were not), and all 15
promo messages showed the same product."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from config.loader import load_config
from scenetrigger.cli.run.demo import DEFAULT_JOURNEY_SCALE, _run_demo
from tests.scenetrigger.test_demo_journeys import FakeClock

START = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 3_600_000  # 01:00 UTC
SECONDS = 53.0  # the issue's `make demo` run


def demo_args(decisions: Path) -> argparse.Namespace:
    """`make demo`'s arguments (scenetrigger demo's defaults), without the page."""
    return argparse.Namespace(
        users=200, rate=15.0, speed=600.0, duration=SECONDS, seed=7, start_ms=START,
        config=None, host="127.0.0.1", port=0, no_web=True, content="pipeline",
        strategies="auto", journey_scale=DEFAULT_JOURNEY_SCALE, deliver="dry-run",
        redis_url=None, decisions=str(decisions), webhook_port=0)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[dict[str, object]]]:
    import contextlib
    import io

    decisions = tmp_path_factory.mktemp("demo") / "decisions.jsonl"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = asyncio.run(_run_demo(demo_args(decisions), load_config(), CollectorRegistry(),
                                     None, clock=FakeClock()))
    assert code == 0
    records = [orjson.loads(line) for line in decisions.read_bytes().splitlines()]
    return out.getvalue().splitlines(), records


def test_every_scene_and_every_journey_step_sends(
        demo_run: tuple[list[str], list[dict[str, object]]]) -> None:
    _, records = demo_run
    config = load_config()
    sent: dict[str, int] = defaultdict(int)
    for record in records:  # the decision log: the policy's word on each message
        if record["outcome"] != "delivered":
            continue
        scene = str(record["scene"])
        if scene.startswith("journey:"):  # j|strategy|version|user|ts|step|channel
            step = str(record["trigger_id"]).split("|")[5]
            sent[f"{scene}:{step}"] += 1
        else:
            sent[scene] += 1
    from scenetrigger.demo.content import demo_journeys

    wanted = list(config.scenes)
    for name, model in demo_journeys(config, "auto", DEFAULT_JOURNEY_SCALE).items():
        wanted += [f"journey:{name}:{step.id}" for step in model.steps if step.send is not None]
    assert len(wanted) == 3 + 4  # 3 scenes; push_1, push_2, sms_and_wechat, offer
    missing = [w for w in wanted if not sent.get(w)]
    assert missing == [], dict(sent)


MATCHED = {"search_driven": "promo_search_target", "category_browser": "promo_category_picks",
           "promo_driven": "promo_hot_list", "undetermined": "promo_hot_list"}


def test_promo_messages_show_products_matched_to_the_visitor(
        demo_run: tuple[list[str], list[dict[str, object]]]) -> None:
    """The demo's promo visitors are its promo hunters: hot deals, those of
    their own category first (tests/channels/test_content.py has the searcher
    and the browser)."""
    lines, _ = demo_run
    promo = [line for line in lines if line.split()[1:2] in (["promo_arrival"],
                                                           ["promo_arrival*"]) and "→ [" in line]
    assert len(promo) >= 15
    for line in promo:  # "(…; VARIANT; STYLE/SEGMENT)" at the end
        variant, style = re.findall(r"(\w+); (\w+)/\w+\)$", line)[0]
        assert MATCHED[style] == variant, line
    # what each shows (subject and the first products): not one list for all
    shown = {line.split("→", 1)[1].split("  (")[0] for line in promo}
    assert len(shown) >= 3, shown
