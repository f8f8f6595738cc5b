"""Check a whole config at once: every schema error, cross-references between
sections, and warnings; each problem with its file, line and a close name.

This is the one validation path: :func:`config.loader.load_config` raises on
its errors, ``scenetrigger check-config`` prints all of it. Schema errors come
from the pydantic models (a scene of an unknown kind is also checked as the
kind it most likely meant, so its other mistakes show in the same run); the
cross-reference pass (:mod:`config.xref`) works on the raw mapping, so a schema
error elsewhere does not hide a misspelled entry scene.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from config.loader import UNION_TAGS, format_error
from config.models import AppConfig
from config.yaml_load import Path, line_of
from triggers.errors import ConfigError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding. ``text`` names the scene (or section) and the field;
    ``path`` is where it is in the document, ``line`` that path's line."""

    text: str
    path: Path = ()
    line: int | None = None
    file: str | None = None
    hint: str | None = None  # a close known name ("did you mean")
    severity: Severity = "error"

    def __str__(self) -> str:
        text = self.text
        if self.hint is not None:
            text += f" (did you mean {self.hint!r}?)"
        if self.file is None:
            return text
        return f"{self.file}:{self.line}: {text}" if self.line else f"{self.file}: {text}"

    def as_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "file": self.file, "line": self.line,
                "path": ".".join(str(p) for p in self.path), "message": self.text,
                "hint": self.hint}


@dataclass
class Doc:
    """Where a raw mapping came from: its file name and line marks."""

    file: str | None = None
    lines: dict[Path, int] = field(default_factory=dict)

    def problem(self, text: str, path: Path, hint: str | None = None,
                severity: Severity = "error") -> Problem:
        return Problem(text, path, line_of(self.lines, path) if self.lines else None,
                       self.file, hint, severity)


@dataclass
class Report:
    """The outcome: the config when it has no errors, every error and warning."""

    config: AppConfig | None
    errors: list[Problem]
    warnings: list[Problem]

    def raise_errors(self) -> AppConfig:
        """The config, or :class:`ConfigError` listing every error."""
        if self.errors or self.config is None:
            raise ConfigError([str(p) for p in self.errors])
        return self.config


def close_name(name: object, known: Iterable[str]) -> str | None:
    """The known name ``name`` most likely misspells, if any is close."""
    if not isinstance(name, str):
        return None
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def check(raw: Any, doc: Doc | None = None) -> Report:
    """Validate ``raw`` (a parsed config); never raises on a bad config."""
    from config.xref import cross_references

    doc = doc or Doc()
    if not isinstance(raw, dict):
        top = f"{doc.file}: " if doc.file else ""
        return Report(None, [Problem(f"{top}the top level must be a mapping with a 'scenes' key")],
                      [])
    config: AppConfig | None = None
    errors: list[Problem] = []
    try:
        config = AppConfig.model_validate(raw)
    except ValidationError as exc:
        included, by_file = _include_errors(raw.get("strategies"))
        errors += [schema_problem(err, doc) for err in exc.errors()
                   if not _xref_rechecks(err) and not (by_file and _about_includes(err))]
        errors += _guessed_kind_errors(raw.get("scenes"), doc) + included
    found, warnings = cross_references(raw, doc)
    errors += found
    if config is not None and not errors:
        from config.reach import never_happens

        warnings += never_happens(config, raw, doc)
    return Report(config if not errors else None, _in_order(errors), _in_order(warnings))


def _in_order(problems: list[Problem]) -> list[Problem]:
    """By file and line, as an editor shows them (stable for equal lines)."""
    return sorted(problems, key=lambda p: (p.file or "", p.line or 0))


def schema_problem(err: Any, doc: Doc, prefix: Path = ()) -> Problem:
    """A pydantic error with its line and, for an unknown key or kind, a close name."""
    loc = (*prefix, *err["loc"])
    err = {**err, "loc": loc}
    path = _document_path(loc)
    hint = None
    if err["type"] == "extra_forbidden" and loc:
        hint = close_name(loc[-1], allowed_keys(loc[:-1]) or ())
        value = err.get("input")
        if len(loc) == 2 and loc[0] == "strategies" and isinstance(value, dict) and \
                ("steps" in value or "entry" in value):
            # A strategy written straight under `strategies:`: say where it goes.
            return doc.problem(f"{format_error(err)} (a strategy goes under "
                               f"strategies.journeys: journeys: {{{loc[1]}: ...}}, or in a "
                               "file strategies.include names)", path)
    elif err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        hint = close_name(tag, _union_tags(loc))
        path = (*path, str(err.get("ctx", {}).get("discriminator", "'kind'")).strip("'"))
    return doc.problem(format_error(err), path, hint)


def _document_path(loc: Sequence[Any]) -> Path:
    """A pydantic ``loc`` as a path in the document: without the union tag
    (``scenes.a.repeat.within`` is ``scenes.a.within``) and dict-key markers."""
    parts = [p for p in loc if p != "[key]"]
    if len(parts) >= 3 and parts[0] in ("scenes", "channels") and parts[2] in UNION_TAGS:
        del parts[2]
    return tuple(parts)


def _xref_rechecks(err: Any) -> bool:
    """Model checks the cross-reference pass reports itself, with lines, even
    when another field of the same strategy is wrong (pydantic skips them then)."""
    if err["type"] != "value_error":
        return False
    text = str(err.get("ctx", {}).get("error", err.get("msg", "")))
    return "no step with id" in text or "no strategy named" in text


def included_files(section: Any) -> Iterator[tuple[Doc, dict[Any, Any]]]:
    """Each file a strategies section includes that reads as a mapping, with
    its own :class:`Doc` (so a problem names that file and its line). The
    others are passed over: the section's schema error names them."""
    from pathlib import Path as FilePath

    from config.strategy_models import resolve_include
    from config.yaml_load import line_map, safe_load_unique

    refs = section.get("include") if isinstance(section, dict) else None
    for ref in refs if isinstance(refs, list) else []:
        if not isinstance(ref, str):
            continue
        path = resolve_include(ref)
        try:
            text = FilePath(path).read_text(encoding="utf-8")
            body = safe_load_unique(text)
        except Exception:  # noqa: S112 - unreadable or not YAML: the section's error says so
            continue
        if isinstance(body, dict):
            yield Doc(str(path), line_map(text)), body


def _include_errors(section: Any) -> tuple[list[Problem], bool]:
    """Schema errors of included strategies files, each with that file's line
    (the section's own error names the file but no line). Returns the
    problems and whether any file had some."""
    from config.strategy_models import StrategyModel, format_strategy_error

    out: list[Problem] = []
    for sub, body in included_files(section):
        for name, strategy in body.items():
            try:
                StrategyModel.model_validate(strategy)
            except ValidationError as exc:
                out += [sub.problem(format_strategy_error(str(name), err, strategy),
                                    (name, *err["loc"]))
                        for err in exc.errors() if not _xref_rechecks(err)]
    return out, bool(out)


def _about_includes(err: Any) -> bool:
    """The strategies section's one error for a bad included file."""
    return tuple(err["loc"]) == ("strategies",) and err["type"] == "value_error"


def _guessed_kind_errors(scenes: Any, doc: Doc) -> list[Problem]:
    """Check a scene of a misspelled kind as the kind it is closest to, so a
    bad ``kind`` does not hide the same scene's bad duration."""
    if not isinstance(scenes, dict):
        return []
    kinds = scene_kinds()
    out: list[Problem] = []
    for name, body in scenes.items():
        if not isinstance(body, dict) or body.get("kind") in kinds:
            continue
        guess = close_name(body.get("kind"), kinds)
        if guess is None:
            continue
        try:
            kinds[guess].model_validate({**body, "kind": guess})
        except ValidationError as exc:
            out += [schema_problem(err, doc, ("scenes", name, guess))
                    for err in exc.errors() if tuple(err["loc"]) != ("kind",)]
    return out


def scene_kinds() -> dict[str, type[BaseModel]]:
    """Scene kind name -> its model, read from AppConfig's ``scenes`` union."""
    return _members(_unwrap(_child(_child(AppConfig, "scenes"), "")))


# ----- walking the models along a path, for "did you mean" -------------------


def allowed_keys(loc: Sequence[Any]) -> list[str] | None:
    """The keys the model at ``loc`` (a pydantic loc, union tags included) takes."""
    tp: Any = AppConfig
    for part in loc:
        tp = _child(tp, part)
        if tp is None:
            return None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return None


def _union_tags(loc: Sequence[Any]) -> list[str]:
    tp: Any = AppConfig
    for part in loc:
        tp = _child(tp, part)
        if tp is None:
            return []
    return list(_members(_unwrap(tp)))


def _field_type(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _members(tp: Any) -> dict[str, type[BaseModel]]:
    """A tagged union's members by tag value (``kind``/``type`` literals)."""
    out: dict[str, type[BaseModel]] = {}
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return out
    for member in typing.get_args(tp):
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        for key in ("kind", "type"):
            info = member.model_fields.get(key)
            if info is not None and typing.get_origin(info.annotation) is Literal:
                out.update(dict.fromkeys(typing.get_args(info.annotation), member))
    return out


def _child(tp: Any, part: Any) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _field_type(tp, str(part))
    origin = typing.get_origin(tp)
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    members = _members(tp)
    if members:
        return members.get(str(part))
    return None
