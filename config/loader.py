"""Load and validate config files, reporting every problem with scene and field."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from config.channel_models import CHANNEL_TYPES
from config.models import AppConfig
from config.strategy_models import error_message
from config.yaml_load import line_map, safe_load_unique
from triggers.errors import ConfigError
from triggers.kinds import kind_names, spelled_out

if TYPE_CHECKING:
    from config.check import Report

DEFAULT_CONFIG_PATH = Path(__file__).with_name("scenes.yaml")

_SECTION_LABELS = {"scenes": "scene", "channels": "channel", "audiences": "audience",
                   "slots": "slot"}
# Discriminated unions put the tag in the error path; it is dropped from messages.
UNION_TAGS = (*kind_names(), *CHANNEL_TYPES)


def load_config(path: str | Path | None = None) -> AppConfig:
    """Read a YAML (or JSON) config; raise :class:`ConfigError` listing every problem."""
    config_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {config_path}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{config_path} is not UTF-8 text: {exc}"]) from None
    return load_config_text(text, source=str(config_path))


def load_config_text(text: str, source: str = "<config>") -> AppConfig:
    """Parse and validate; every problem names ``source``, its line, the scene
    (or section) and the field."""
    return check_text(text, source).raise_errors()


def check_text(text: str, source: str = "<config>") -> Report:
    """Every error and warning of a config text (see :mod:`config.check`)."""
    from config.check import Doc, Problem, Report, check

    try:
        raw = safe_load_unique(text)  # safe: a config never constructs objects; no duplicate keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is None:
            return Report(None, [Problem(f"{source}: not valid YAML: {exc}")], [])
        # The file's line and PyYAML's own words, not its "<unicode string>" excerpt.
        said = ": ".join(str(x) for x in (getattr(exc, "context", None),
                                         getattr(exc, "problem", None)) if x)
        return Report(None, [Problem(f"not valid YAML: {said} (column {mark.column + 1})",
                                     line=mark.line + 1, file=source)], [])
    return check(raw, Doc(source, line_map(text)))


def validate_config(raw: Any, source: str = "<config>") -> AppConfig:
    """Validate a parsed config (no lines known: problems name scene and field)."""
    from config.check import Doc, check

    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping with a 'scenes' key"])
    return check(raw, Doc()).raise_errors()


def format_error(err: Any) -> str:
    """One pydantic error as ``scene 'x', field 'count': must be >= 1``."""
    loc = [str(part) for part in err["loc"]]
    message = _message(err)
    if not loc:
        return message
    section = loc[0]
    if section == "strategies":
        from config.strategy_models import format_section_error

        return format_section_error(loc[1:], err)
    if section in _SECTION_LABELS and len(loc) >= 2:
        name = loc[1]
        rest = loc[2:]
        # A discriminated union puts the kind in the path: drop it.
        if rest and rest[0] in UNION_TAGS:
            rest = rest[1:]
        if not rest and err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # a bad or missing tag is the scene's `kind` (a channel's `type`) field
            rest = [str(err.get("ctx", {}).get("discriminator", "kind")).strip("'")]
        where = f"{_SECTION_LABELS[section]} {name!r}"
        if rest:
            return f"{where}, field {'.'.join(rest)!r}: {message}"
        return f"{where}: {message}"
    if len(loc) == 1:
        return f"top level, field {section!r}: {message}"
    return f"section {section!r}, field {'.'.join(loc[1:])!r}: {message}"


def _message(err: Any) -> str:
    """Union-tag errors named in config words; the rest as every section says them."""
    kind = err["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found") and \
            err.get("ctx", {}).get("discriminator") == "'type'":
        tags = f"{', '.join(CHANNEL_TYPES[:-1])} or {CHANNEL_TYPES[-1]}"
        if kind == "union_tag_not_found":
            return f"missing 'type' (use {tags})"
        return f"unknown type {err['ctx'].get('tag')!r} (use {tags})"
    if kind == "union_tag_invalid":
        return (f"unknown kind {err.get('ctx', {}).get('tag')!r} "
                f"(use {spelled_out()})")
    if kind == "union_tag_not_found":
        return f"missing 'kind' (use {spelled_out()})"
    return error_message(err)
