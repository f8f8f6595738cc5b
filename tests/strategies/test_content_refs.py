"""Every content ref of the shipped strategies resolves to content, and the
journey send path renders it per user (style and segment), as scenes do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from channels.content.catalog import MemoryCatalog
from channels.content.select import ContentSelector
from config.content_models import ContentModel, default_content
from config.loader import load_config
from config.strategy_models import load_strategy_file
from strategies.actions import SendAction
from strategies.embedded import JourneySubscriber
from tests.channels.content_factories import T0, user_state

STRATEGY_DIR = Path(__file__).resolve().parents[2] / "config" / "strategies"
STYLES = ("search_driven", "category_browser", "promo_driven")


def shipped_refs() -> dict[str, str]:
    """content ref -> 'file: strategy/step' of its first use, read from the YAML."""
    refs: dict[str, str] = {}
    files = sorted(STRATEGY_DIR.glob("*.yaml"))
    assert files, STRATEGY_DIR
    for path in files:
        for name, model in load_strategy_file(path).items():
            for step in model.steps:
                if step.send is not None:
                    refs.setdefault(step.send.content, f"{path.name}: {name}/{step.id}")
    return refs


def test_the_shipped_strategies_send_content() -> None:
    # Guards the test below: it must have refs to check.
    assert {"reactivation_push_1", "reactivation_last_call", "winback_offer"} <= set(
        shipped_refs())


@pytest.mark.parametrize("ref", sorted(shipped_refs()))
def test_every_shipped_content_ref_has_content(ref: str) -> None:
    content = default_content()
    assert ref in content.journeys, f"no content for {ref} ({shipped_refs()[ref]})"
    selector = ContentSelector(content, MemoryCatalog())
    assert selector.has_ref(ref)
    choice = selector.choose_ref(ref, "u1", None, T0)
    rendered = choice.render()
    assert rendered.subject.strip() and rendered.text.strip()
    assert "${" not in rendered.subject + rendered.text


def test_journey_content_differs_by_style_and_segment() -> None:
    selector = ContentSelector(default_content(), MemoryCatalog())
    ref = "reactivation_push_1"
    by_style = {s: selector.choose_ref(ref, f"u-{s}", user_state(f"u-{s}", s), T0)
                for s in STYLES}
    assert len({c.variant for c in by_style.values()}) == len(STYLES)
    category = by_style["category_browser"].render()
    assert "electronics.smartphone" in category.subject + category.text
    search = by_style["search_driven"].render()
    assert "galaxy a50" in search.text
    vip = selector.choose_ref(ref, "u-vip", user_state("u-vip", "undetermined", "champion"), T0)
    generic = selector.choose_ref(ref, "u-new", None, T0)
    assert vip.variant != generic.variant and generic.fallback


def test_an_unknown_ref_is_the_generic_message_and_not_a_journey_ref() -> None:
    selector = ContentSelector(default_content(), MemoryCatalog())
    assert not selector.has_ref("no_such_ref")
    assert selector.choose_ref("no_such_ref", "u1", None, T0).fallback


def test_journey_content_may_not_name_products() -> None:
    raw = yaml.safe_load("""
journeys:
  r1:
    variants:
      - {name: bad, subject: "Buy ${product_name}", text: "x"}
""")
    with pytest.raises(ValueError, match=r"journeys\.r1, variant 'bad'.*product_name"):
        ContentModel.model_validate(raw)


def test_the_journey_send_path_renders_the_ref() -> None:
    config = load_config(None)
    sub = JourneySubscriber(config, lambda _action: None,
                            journeys=load_strategy_file(STRATEGY_DIR / "reactivation.yaml"),
                            states=lambda uid: user_state(uid, "category_browser"))
    send = SendAction("u7", "push", "reactivation_push_1", "reactivation", "push_1", "m1", T0)
    rendered = sub.render(send)
    expected = ContentSelector(config.content, MemoryCatalog()).choose_ref(
        "reactivation_push_1", "u7", user_state("u7", "category_browser"), T0)
    assert (rendered.variant, rendered.subject, rendered.text) == (
        expected.variant, expected.render().subject, expected.render().text)
    assert rendered.subject == "New in electronics.smartphone"
