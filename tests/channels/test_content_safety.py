"""Hostile template and config input cannot run code; values are escaped in HTML."""

from __future__ import annotations

import pytest

from channels.content.catalog import MemoryCatalog, Product
from channels.content.select import ContentSelector
from config.content_models import ContentModel
from config.loader import validate_config
from tests.channels.content_factories import PHONE, PHONES, T0, user_state
from triggers.errors import ConfigError
from triggers.events import Trigger


def content(subject: str, text: str = "t", html: str | None = None) -> ContentModel:
    variant = {"name": "v", "products": "trigger", "subject": subject, "text": text}
    if html is not None:
        variant["html"] = html
    return ContentModel.model_validate({"scenes": {"s": {"variants": [variant]}}})


@pytest.mark.parametrize("template", [
    "${__class__.__mro__}", "${__class__}", "${product_name.__class__}", "${os.system}",
    "${product_name()}", "${ product_name }", "${1+1}", "${",
])
def test_hostile_placeholders_are_config_errors_naming_the_place(template: str) -> None:
    raw = {"scenes": {"s": {"kind": "arrival", "when": {"type": "view"}}},
           "content": {"scenes": {"s": {"variants": [
               {"name": "v", "subject": template, "text": "x"}]}}}}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    message = "\n".join(err.value.problems)
    assert "content" in message and "variants" in message


def test_fallback_cannot_reference_products() -> None:
    with pytest.raises(ValueError, match="product_name"):
        ContentModel.model_validate({"scenes": {"s": {"fallback": {
            "subject": "${product_name}", "text": "x"}}}})


async def test_other_template_syntaxes_are_inert_text() -> None:
    model = content("{{ 7*7 }} {% import os %} $product_name #{1+1}", "${product_name} {{7*7}}")
    cat = MemoryCatalog([Product(PHONE, "Phone", 100, "https://x.example/p", "", PHONES)])
    choice = await ContentSelector(model, cat).select(Trigger("s", "u", PHONE, T0), None, T0)
    rendered = choice.render()
    assert rendered.subject == "{{ 7*7 }} {% import os %} $product_name #{1+1}"
    assert rendered.text == "Phone {{7*7}}"
    assert "49" not in rendered.subject


async def test_values_are_escaped_in_html_and_never_re_expanded() -> None:
    evil = Product(PHONE, '<script>alert(1)</script> ${__class__} "q"', 100,
                   'https://x.example/p?a=1&b="><script>', "javascript:alert(1)", PHONES)
    model = content("${product_name}", "${product_name}",
                    '<a href="${product_url}"><img src="${product_image}">${product_name}</a>')
    choice = await ContentSelector(model, MemoryCatalog([evil])).select(
        Trigger("s", "u", PHONE, T0), user_state("u", "search_driven"), T0)
    rendered = choice.render()
    assert rendered.html is not None
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "&quot;&gt;&lt;script&gt;" in rendered.html  # attribute cannot be broken out of
    assert "javascript:" not in rendered.html  # only http(s) links survive
    # plain-text parts carry the value as is, and a value is never parsed as a template
    assert rendered.subject == '<script>alert(1)</script> ${__class__} "q"'


async def test_products_list_in_html_is_built_from_escaped_pieces() -> None:
    evil = Product("1", "<b>x</b>", 100, "https://x.example/p", "", "c", discount=50)
    model = ContentModel.model_validate({"scenes": {"s": {"variants": [
        {"name": "v", "products": "hot", "subject": "s", "text": "${products}",
         "html": "${products}"}]}}})
    choice = await ContentSelector(model, MemoryCatalog([evil])).select(
        Trigger("s", "u", None, T0), None, T0)
    rendered = choice.render()
    assert rendered.html is not None and "&lt;b&gt;x&lt;/b&gt;" in rendered.html
    assert "<b>" not in rendered.html and rendered.html.startswith("<ul><li>")
    assert rendered.text == "- <b>x</b> ¥1.00: https://x.example/p"
