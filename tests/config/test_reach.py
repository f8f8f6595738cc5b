"""check-config says what a valid config can never do, as warnings that
--strict fails on (each with file, line, path; in --json too): a scene whose
content names no configured channel, a channel nothing names, a strategy step
the caps always suppress, product variants with no catalog."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config.loader import check_text

SCENES = """\
scenes:
  repeat_view_no_purchase:
    kind: repeat
    when: {type: view}
    per: product_id
    count: 3
    within: 30m
    unless: {type: purchase}
    cooldown: 24h
  cart_abandonment:
    kind: absence
    start: {type: cart}
    cancel: {type: purchase}
    after: 30m
  promo_arrival:
    kind: arrival
    when: {page: {prefix: /promo}}
    per: page
    cooldown: 1h
"""
# The operator's config of issue 20: an email channel, the shipped content
# (cart_abandonment and promo_arrival name mostly inbox/webhook).
OPERATOR = SCENES + """\
channels:
  email:
    type: email
    host: 127.0.0.1
    port: 8025
    sender: shop@example.com
    postal_address: "Shop Ltd, 1 Main St, Springfield"
"""


def check_config(path: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "scenetrigger.cli.main", "check-config", str(path),
                           "--json", *flags], capture_output=True, text=True, timeout=60,
                          check=False)
    return done.returncode, json.loads(done.stdout)


def test_the_operators_config_fails_strict(tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(OPERATOR)
    catalog = tmp_path / "products.csv"
    catalog.write_text("product_id,name,price,category\np1,Bike,99,kids\n")
    code, result = check_config(path, "--catalog", str(catalog))
    assert code == 0 and result["ok"] is True  # warnings only: it loads and runs
    code, result = check_config(path, "--strict", "--catalog", str(catalog))
    assert code == 1
    by_path = {w["path"]: w for w in result["warnings"]}
    promo = by_path["scenes.promo_arrival"]
    assert promo["line"] == 15 and promo["file"] == str(path)
    assert promo["severity"] == "warning"
    assert promo["message"] \
        == "scene 'promo_arrival': its content names only channel(s) inbox, webhook, none of " \
           "them configured (channels: email): every trigger is suppressed as no_channel"
    cart = by_path["scenes.cart_abandonment"]
    assert cart["line"] == 10
    assert "variant 'cart_reminder'" in cart["message"] and "cart_vip" not in cart["message"]
    assert "no_channel" in cart["message"]


def test_a_config_whose_channels_reach_every_message_passes_strict(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(SCENES + "channels:\n  inbox: {type: inbox}\n  webhook: {type: webhook, "
                    "url: 'http://127.0.0.1:1/h', secret_env: X}\n  email: {type: email, host: "
                    "127.0.0.1, port: 25, sender: a@example.com, postal_address: 'Shop Ltd, "
                    "1 Main St'}\n")
    catalog = tmp_path / "products.csv"
    catalog.write_text("product_id,name,price,category\np1,Bike,99,kids\n")
    code, result = check_config(path, "--strict", "--catalog", str(catalog))
    assert (code, result["warnings"]) == (0, [])


def test_a_channel_nothing_names_is_a_warning_with_its_line() -> None:
    text = SCENES + "channels:\n  inbox: {type: inbox}\n  webhook: {type: webhook, url: " \
        "'http://127.0.0.1:1/h', secret_env: X}\n  sms: {type: log}\n"
    report = check_text(text, "c.yaml")
    unused = [p for p in report.warnings if "never sends" in p.text]
    assert [(p.line, ".".join(map(str, p.path))) for p in unused] == [(23, "channels.sms")]
    assert unused[0].text == ("channel 'sms': no scene's content and no strategy step names "
                              "it (it never sends)")


SAME = "and 1 message(s) go to the user at the same moment before it"


@pytest.mark.parametrize(("delivery", "capped"), [
    # the entry scene's own message goes out as the journey starts: with one a
    # day, the two pushes at that moment never do
    ("caps: {per_day: 1, per_week: 10}", [(31, "step 1 ('first')", f"caps.per_day 1, {SAME}"),
                                          (32, "step 2 ('again')", f"caps.per_day 1, {SAME}")]),
    ("channel_caps: {push: {per_day: 0}}", [(31, "step 1 ('first')", "channel_caps.push 0"),
                                            (32, "step 2 ('again')", "channel_caps.push 0"),
                                            (34, "step 4 ('later')", "channel_caps.push 0")]),
    # a day apart, the week's cap holds only in some weeks: not "always"
    ("channel_caps: {push: {per_week: 1}}", [
        (32, "step 2 ('again')", "channel_caps.push 1 with 1 push message(s) at the same "
                                 "moment")]),
    ("caps: {per_day: 3, per_week: 10}", []),
])
def test_a_step_the_caps_always_suppress(delivery: str,
                                         capped: list[tuple[int, str, str]]) -> None:
    text = SCENES + f"""\
channels:
  inbox: {{type: inbox}}
  webhook: {{type: webhook, url: 'http://127.0.0.1:1/h', secret_env: X}}
  push: {{type: log}}
delivery:
  {delivery}
strategies:
  journeys:
    nudge:
      entry: {{scene: cart_abandonment}}
      steps:
        - {{id: first, send: {{channel: push, content: reactivation_push_1}}}}
        - {{id: again, send: {{channel: push, content: reactivation_push_2}}}}
        - {{wait: 1d}}
        - {{id: later, send: {{channel: push, content: reactivation_push_2}}}}
"""
    report = check_text(text, "s.yaml")
    assert report.errors == []
    found = [(p.line, p.text, p.path[-2:]) for p in report.warnings if "always suppress" in p.text]
    assert found == [(line, f"strategy 'nudge', {label}: the caps always suppress it ({why})",
                      ("steps", line - 31)) for line, label, why in capped]


def test_the_shipped_caps_leave_the_reactivation_steps_alone() -> None:
    text = SCENES + """\
channels:
  inbox: {type: inbox}
  webhook: {type: webhook, url: 'http://127.0.0.1:1/h', secret_env: X}
  push: {type: log}
  sms: {type: log}
  wechat: {type: log}
  email: {type: email, host: 127.0.0.1, port: 25, sender: a@example.com,
          postal_address: 'Shop Ltd, 1 Main St'}
strategies: {include: [reactivation]}
"""
    report = check_text(text, "r.yaml")
    assert report.errors == [] and report.warnings == []


def test_product_variants_without_a_catalog(tmp_path: Path) -> None:
    path = tmp_path / "scenes.yaml"
    path.write_text(SCENES)
    code, result = check_config(path, "--strict")
    assert code == 1
    found = {w["path"]: w for w in result["warnings"]}
    assert set(found) == {"scenes.repeat_view_no_purchase", "scenes.cart_abandonment",
                          "scenes.promo_arrival"}
    promo = found["scenes.promo_arrival"]
    assert promo["line"] == 15
    assert "promo_hot_list, zh_promo_search_target, zh_promo_category_picks, zh_promo_hot_list" \
           " show products and no catalog source is given" in promo["message"]
    empty = tmp_path / "empty.csv"
    empty.write_text("product_id,name,price,category\n")
    code, result = check_config(path, "--strict", "--catalog", str(empty))
    assert code == 1
    assert all(f"the catalog {empty} holds no products" in w["message"]
               for w in result["warnings"])
