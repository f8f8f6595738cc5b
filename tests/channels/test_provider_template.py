"""The safe ``${name}`` substitution (unit) and config validation of
provider templates: hostile text never runs code or reads attributes."""

from __future__ import annotations

import html

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.loader import load_config_text
from config.safe_template import TemplateError, compile_template, json_escape, render
from triggers.errors import ConfigError

VALUES = {"name": "Ann", "data.phone": "+86 138", "price": "9.90"}


def test_placeholders_are_literal_keys() -> None:
    assert render("Hi ${name}, ${price}¥", VALUES) == "Hi Ann, 9.90¥"
    assert render("${data.phone}", VALUES) == "+86 138"
    assert compile_template("${a} ${b.c} $${d}").names == frozenset({"a", "b.c"})
    assert render("cost: $${price} vs ${price}", VALUES) == "cost: ${price} vs 9.90"


@pytest.mark.parametrize("text", [
    "{{7*7}}", "{% for x in y %}{% endfor %}", "{0.__class__}", "%(name)s", "$name",
    "#{7*7}", "<%= 7*7 %>", "$ {name}", "${}", "",
])
def test_other_template_syntaxes_are_plain_text(text: str) -> None:
    if "${" in text:
        with pytest.raises(TemplateError):
            compile_template(text)
    else:
        assert render(text, VALUES) == text


@pytest.mark.parametrize("name", ["__class__", "name.__class__", "a.b", "name.upper",
                                  "data.phone.__len__", "__builtins__", "price.real"])
def test_names_never_walk_attributes(name: str) -> None:
    # Only a value stored under exactly this key could fill it.
    with pytest.raises(TemplateError, match="no value"):
        render("${" + name + "}", VALUES)
    assert render("${" + name + "}", {name: "x"}) == "x"
    assert compile_template("${" + name + "}").render(VALUES, missing="") == ""


@pytest.mark.parametrize("bad", ["${ name}", "${na me}", "${name", "${1abc}", "${a..b}",
                                 "${a[0]}", "${a()}", "${a-b}", "${" + "a" * 200 + "}"])
def test_bad_placeholders_are_errors(bad: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(bad)


def test_values_are_not_substituted_twice_and_escape_applies() -> None:
    values = {"text": '${name} "quoted" \\ <b>', "name": "Ann"}
    assert render("${text}", values) == values["text"]
    assert render('{"t": "${text}"}', values, json_escape) == \
        '{"t": "${name} \\"quoted\\" \\\\ <b>"}'
    assert orjson.loads(render('{"t": "${text}"}', values, json_escape)) == {"t": values["text"]}
    assert render("<p>${text}</p>", values, html.escape) == \
        "<p>${name} &quot;quoted&quot; \\ &lt;b&gt;</p>"


# No per-example deadline or speed check: a loaded machine's pause is not a bug.
LOADED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@LOADED
@given(st.text(max_size=200))
def test_json_escaped_values_always_stay_inside_their_string(value: str) -> None:
    body = render('{"v": "${v}", "fixed": 1}', {"v": value}, json_escape)
    assert orjson.loads(body) == {"v": value, "fixed": 1}


@LOADED
@given(st.text(alphabet="${}.a_ 1\\", max_size=60))
def test_any_text_compiles_or_fails_cleanly(text: str) -> None:
    try:
        template = compile_template(text)
    except TemplateError:
        return
    assert template.render({n: "" for n in template.names}) is not None


def test_config_rejects_bad_templates_naming_channel_and_field() -> None:
    text = """
scenes: {}
channels:
  sms_cn:
    type: sms
    url: "http://127.0.0.1:9/${ oops}"
    body: {to: "${data.phone", text: "${text}"}
  hook:
    type: webhook
    url: http://127.0.0.1:9/h
    secret_env: HOOK_SECRET
    headers: {Authorization: "Bearer plain-text-secret"}
"""
    with pytest.raises(ConfigError) as err:
        load_config_text(text)
    problems = "\n".join(err.value.problems)
    assert "channel 'sms_cn', field 'url'" in problems
    assert "channel 'sms_cn', field 'body'" in problems
    assert "channel 'hook', field 'headers'" in problems and "headers_env" in problems
