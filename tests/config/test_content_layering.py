"""A config's ``content:`` extends the shipped content scene by scene;
``inherit: false`` makes it all the content there is."""

from __future__ import annotations

from config.content_models import default_content
from config.loader import check_text, load_config_text

SCENES = "scenes:\n  cart_abandonment: {kind: absence, start: {type: cart}, after: 30m}\n"
OWN = """\
content:
  currency: "$"
  styles: {min_activity: 5}
  scenes:
    cart_abandonment:
      variants:
        - {name: mine, subject: "Yours", text: "Come back"}
"""


def test_own_scene_content_replaces_only_that_scene() -> None:
    shipped = default_content()
    config = load_config_text(SCENES + OWN)
    content = config.content
    assert [v.name for v in content.scenes["cart_abandonment"].variants] == ["mine"]
    others = set(shipped.scenes) - {"cart_abandonment"}
    assert others and all(content.scenes[s] == shipped.scenes[s] for s in others)
    assert content.journeys == shipped.journeys
    assert content.currency == "$"
    # thresholds: the keys given override, the rest stay shipped
    assert content.styles.min_activity == 5
    assert content.styles.search_share == shipped.styles.search_share


def test_inherit_false_opts_out_of_the_shipped_content() -> None:
    config = load_config_text(SCENES + OWN.replace("content:\n", "content:\n  inherit: false\n"))
    assert list(config.content.scenes) == ["cart_abandonment"]
    assert config.content.journeys == {}


def test_check_knows_the_layered_refs() -> None:
    journey = ("strategies:\n  journeys:\n    s:\n      entry: {scene: cart_abandonment}\n"
               "      steps: [{send: {channel: push, content: reactivation_push_1}}]\n")
    assert check_text(SCENES + OWN + journey).errors == []
    opted_out = check_text(SCENES + OWN.replace("content:\n", "content:\n  inherit: false\n")
                           + journey)
    assert [p.text for p in opted_out.errors] == [
        "strategy 's', step 1, field 'send.content': no content 'reactivation_push_1' in "
        "content.journeys (the generic message would go out)"]
