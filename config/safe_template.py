"""A minimal, safe text substitution: ``${name}`` placeholders, nothing else.

Config-supplied templates are data, never code. A placeholder is ``${`` + a
name + ``}`` where the name is letters, digits, ``_`` and ``.`` (no leading
digit). The name is looked up as ONE literal key in a flat mapping of
strings: ``${data.phone}`` reads the key ``"data.phone"``; it never walks
attributes or calls anything, so ``${__class__}`` or ``${a.b}`` can only
find a value that the caller put under exactly that key. ``$${`` writes a
literal ``${``. Any other text (``{{7*7}}``, ``{% %}``, ``$x``) is copied
as is.

Content helpers may reuse this module: :func:`compile_template` once (it
reports bad syntax up front, e.g. at config load), then
:meth:`Template.render` per message with an escape function
(:func:`json_escape`, :func:`html.escape`, :func:`urllib.parse.quote_plus`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from triggers.errors import SceneTriggerError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*"
_TOKEN = re.compile(r"\$\$\{|\$\{(" + _NAME + r")\}|\$\{")
_MAX_NAME = 128


class TemplateError(SceneTriggerError):
    """A template with bad syntax, or a placeholder with no value."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: alternating literal text and placeholder names."""

    source: str
    parts: tuple[str, ...]  # even index: literal text; odd index: a placeholder name

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.parts[1::2])

    def render(
        self,
        values: Mapping[str, str],
        escape: Callable[[str], str] | None = None,
        missing: str | None = None,
    ) -> str:
        """Fill every placeholder from ``values`` (escaped with ``escape``).

        A name absent from ``values`` raises :class:`TemplateError`, unless
        ``missing`` is given, which is then used (unescaped) instead.
        """
        out: list[str] = []
        for index, part in enumerate(self.parts):
            if index % 2 == 0:
                out.append(part)
                continue
            value = values.get(part)
            if value is None:
                if missing is None:
                    raise TemplateError(f"no value for placeholder ${{{part}}}")
                out.append(missing)
                continue
            out.append(escape(value) if escape is not None else value)
        return "".join(out)


def compile_template(source: str) -> Template:
    """Parse ``source``; raise :class:`TemplateError` on an unclosed or bad ``${``."""
    parts: list[str] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(source):
        literal.append(source[pos:match.start()])
        pos = match.end()
        piece = match.group(0)
        if piece == "$${":
            literal.append("${")
            continue
        name = match.group(1)
        if name is None:
            snippet = source[match.start():match.start() + 24]
            raise TemplateError(
                f"bad placeholder at offset {match.start()} ({snippet!r}): "
                "use ${name} with letters, digits, '_' and '.'"
            )
        if len(name) > _MAX_NAME:
            raise TemplateError(f"placeholder name longer than {_MAX_NAME} characters")
        parts.append("".join(literal))
        parts.append(name)
        literal = []
    literal.append(source[pos:])
    parts.append("".join(literal))
    return Template(source, tuple(parts))


def render(source: str, values: Mapping[str, str],
           escape: Callable[[str], str] | None = None) -> str:
    """One-shot :func:`compile_template` + :meth:`Template.render`."""
    return compile_template(source).render(values, escape)


def json_escape(value: str) -> str:
    """``value`` as the inside of a JSON string literal (quotes not added)."""
    return orjson.dumps(value).decode()[1:-1]


def flatten_values(data: Mapping[str, Any], prefix: str = "", depth: int = 3) -> dict[str, str]:
    """Nested mappings as flat dotted string keys: ``{"a": {"b": 1}}`` →
    ``{"a.b": "1"}``. Lists and deeper levels are JSON text; ``None`` is left out."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping) and depth > 0:
            out.update(flatten_values(value, name + ".", depth - 1))
        elif isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, int | float):
            out[name] = str(value)
        else:
            out[name] = orjson.dumps(value, default=str).decode()
    return out
