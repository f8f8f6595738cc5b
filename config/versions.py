"""Versioned config: every accepted config is a numbered version with its
digest, author, time, message and the diff from the version before, kept in a
store every process reads (a compacted Kafka topic, or a directory in the
embedded mode). The current version is the newest; a rollback stores an old
version's text again as a new version, so the log only grows.

A push validates first (:func:`config.loader.check_text`, the one check):
a config with errors is refused, naming file, line, scene and field, and
nothing is stored. Authors come from the admin token (:func:`author_of`).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from config.clock import wall_ms
from config.experiment import ExperimentSpec
from config.loader import check_text
from config.tokens import ADMIN_TOKENS_ENV, CLIENT_TOKEN_ENV, AdminTokens
from triggers.errors import ConfigError, SceneTriggerError

# the caller's own token (the CLI presents it)
TOKEN_ENV = CLIENT_TOKEN_ENV
MAX_TEXT = 4 << 20  # a config larger than this is not a config


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ConfigVersion:
    version: int
    digest: str
    author: str
    time_ms: int
    message: str
    text: str
    diff: str
    rollback_of: int | None = None
    experiment: ExperimentSpec | None = None  # a candidate under test (config.experiment)

    def to_json(self) -> bytes:
        raw = asdict(self)
        raw["experiment"] = None if self.experiment is None else self.experiment.to_dict()
        if self.experiment is None:
            del raw["experiment"]  # versions without one are stored as before
        return orjson.dumps(raw)

    @classmethod
    def from_json(cls, data: bytes) -> ConfigVersion:
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a config version is a JSON object")
        return cls(int(raw["version"]), str(raw["digest"]), str(raw["author"]),
                   int(raw["time_ms"]), str(raw["message"]), str(raw["text"]),
                   str(raw["diff"]), raw.get("rollback_of"),
                   None if raw.get("experiment") is None
                   else ExperimentSpec.from_dict(raw["experiment"]))

    def summary(self) -> dict[str, Any]:
        """Everything but the text and diff (``config log``)."""
        return {"version": self.version, "digest": self.digest, "author": self.author,
                "time_ms": self.time_ms, "message": self.message,
                "rollback_of": self.rollback_of,
                "experiment": None if self.experiment is None else self.experiment.to_dict()}


class VersionStore(Protocol):
    """Where versions live. ``versions`` returns them in version order."""

    async def versions(self) -> list[ConfigVersion]: ...

    async def append(self, version: ConfigVersion) -> None: ...


class DirectoryStore:
    """One JSON file per version (``v00000001.json``) in a directory: the
    embedded mode's store. A version file is created exclusively, so two
    pushes cannot both take the same number."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def versions(self) -> list[ConfigVersion]:
        if not self.path.is_dir():
            return []
        found = []
        for file in sorted(self.path.glob("v*.json")):
            try:
                found.append(ConfigVersion.from_json(file.read_bytes()))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a torn or foreign file is not a version
        return sorted(found, key=lambda v: v.version)

    async def append(self, version: ConfigVersion) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / f"v{version.version:08d}.json"
        tmp = self.path / f".{target.name}.{os.getpid()}.tmp"
        tmp.write_bytes(version.to_json())
        try:
            os.link(tmp, target)  # fails if that number is taken
        except FileExistsError:
            raise SceneTriggerError(f"version {version.version} was pushed meanwhile: "
                                    "push again") from None
        finally:
            tmp.unlink(missing_ok=True)


def author_of(token: str | None, env: Mapping[str, str] | None = None) -> str:
    """The name of the admin token ``token`` (:class:`config.tokens.AdminTokens`:
    constant-time, every token compared). Refuses when no token is configured
    or ``token`` matches none."""
    tokens = AdminTokens.from_env(env)
    if not tokens:
        raise SceneTriggerError(f"no admin token is configured (set {ADMIN_TOKENS_ENV}, "
                                "name=token,...): config changes are refused")
    if not token:
        raise SceneTriggerError(f"give your admin token in {TOKEN_ENV}")
    found = tokens.name_of(token)
    if found is None:
        raise SceneTriggerError("the admin token is not valid")
    return found


def _diff(old: str, new: str, old_label: str, new_label: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True), old_label, new_label))


def current(versions: Sequence[ConfigVersion]) -> ConfigVersion | None:
    return versions[-1] if versions else None


async def push(store: VersionStore, text: str, message: str, author: str,
               source: str = "<config>", rollback_of: int | None = None,
               now_ms: int | None = None, experiment: ExperimentSpec | None = None,
               ends_experiment: bool = False) -> ConfigVersion:
    """Validate ``text`` and store it as the next version. Raises
    :class:`ConfigError` (every problem, with ``source`` and line) and stores
    nothing when it does not validate."""
    if len(text) > MAX_TEXT:
        raise ConfigError([f"{source}: larger than {MAX_TEXT} characters"])
    check_text(text, source).raise_errors()
    versions = await store.versions()
    last = current(versions)
    if last is not None and last.experiment is not None and rollback_of is None \
            and not ends_experiment:  # a plain push would end it unnoticed
        raise SceneTriggerError(f"v{last.version} is an experiment against "
                                f"v{last.experiment.base}: end it first (`config promote` or "
                                "`config rollback`)")
    number = last.version + 1 if last else 1
    diff = _diff(last.text if last else "", text,
                 f"v{last.version}" if last else "(none)", f"v{number}")
    version = ConfigVersion(number, digest_of(text), author,
                            wall_ms() if now_ms is None else now_ms,
                            message, text, diff, rollback_of, experiment)
    await store.append(version)
    return version


def running(versions: Sequence[ConfigVersion]) -> tuple[ConfigVersion, ConfigVersion] | None:
    """(candidate, base) when the current version is an experiment's candidate."""
    last = current(versions)
    if last is None or last.experiment is None:
        return None
    base = next((v for v in versions if v.version == last.experiment.base), None)
    if base is None:
        raise SceneTriggerError(f"config v{last.version} is an experiment against "
                                f"v{last.experiment.base}, which the store does not hold")
    return last, base


async def push_experiment(store: VersionStore, text: str, message: str, author: str,
                          share: float, horizon_ms: int, source: str = "<config>",
                          now_ms: int | None = None) -> ConfigVersion:
    """Store ``text`` as a candidate run for ``share`` of the users against
    the current version (one experiment at a time)."""
    versions = await store.versions()
    base = current(versions)
    if base is None:
        raise SceneTriggerError("no config version yet: push a base version first")
    if base.experiment is not None:
        raise SceneTriggerError(f"v{base.version} is an experiment already: "
                                "`config promote` or `config rollback` ends it")
    return await push(store, text, message, author, source, now_ms=now_ms,
                      experiment=ExperimentSpec(base.version, share, horizon_ms))


async def promote(store: VersionStore, message: str, author: str) -> ConfigVersion:
    """End the running experiment: its candidate for everyone (a new version)."""
    found = running(await store.versions())
    if found is None:
        raise SceneTriggerError("no experiment runs: nothing to promote")
    candidate, _base = found
    return await push(store, candidate.text, message or f"promote v{candidate.version}", author,
                      source=f"config v{candidate.version}", ends_experiment=True)


async def rollback(store: VersionStore, number: int | None, message: str,
                   author: str) -> ConfigVersion:
    """Make version ``number``'s text current again, as a new version; without
    a number, the running experiment's base (which ends the experiment)."""
    versions = await store.versions()
    if number is None:
        found = running(versions)
        if found is None:
            raise SceneTriggerError("give the version to roll back to (no experiment runs)")
        number = found[1].version
    old = next((v for v in versions if v.version == number), None)
    if old is None:
        raise SceneTriggerError(f"no config version {number} (have "
                                f"{', '.join(str(v.version) for v in versions) or 'none'})")
    return await push(store, old.text, message or f"rollback to v{number}", author,
                      source=f"config v{number}", rollback_of=number)
