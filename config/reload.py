"""Hot reload: follow a config file or the versioned config store and swap in
a new config only when it validates.

A bad file or version is reported (every problem, with file, line, scene and
field) and the running config stays in force. Runtimes call
:meth:`ConfigReloader.poll` (a file) or :meth:`ConfigReloader.follow` (the
store of :mod:`config.versions`) from their own loop (embedded runtime, worker
timer, the services' reload task), so there is no thread and no global. With
metrics, ``scenetrigger_config_version_info{digest}`` is 1 for the digest in
force and ``scenetrigger_config_reload_failures_total`` counts refusals.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.experiment import RunningExperiment
from config.loader import load_config, load_config_text
from config.models import AppConfig
from config.versions import ConfigVersion, VersionStore, current, digest_of, running
from triggers.errors import ConfigError, SceneTriggerError

log = logging.getLogger(__name__)

Listener = Callable[[AppConfig], None]


@dataclass
class ReloadStatus:
    """What the last reload attempt did (shown on admin pages and metrics)."""

    version: int = 1
    digest: str = ""
    last_error: list[str] = field(default_factory=list)
    rejected: int = 0
    stored_version: int | None = None  # the store's number of the version in force


_ON: weakref.WeakKeyDictionary[Any, ReloadMetrics] = weakref.WeakKeyDictionary()


class ReloadMetrics:
    """The two series every process exposes about its config. One set per
    Prometheus registry (:meth:`on`): registering twice fails."""

    @classmethod
    def on(cls, registry: Any, failures: Any = None) -> ReloadMetrics:
        found = _ON.get(registry)
        if found is None:
            found = _ON[registry] = cls(registry, failures)
        return found

    def __init__(self, registry: Any, failures: Any = None) -> None:
        from prometheus_client import Counter, Gauge

        self.version_info = Gauge("scenetrigger_config_version_info",
                                  "1 for the digest of the config in force", ["digest"],
                                  registry=registry)
        # A process that already has the counter (the worker's) passes it in.
        self.failures = failures if failures is not None else Counter(
            "scenetrigger_config_reload_failures",
            "Config reloads rejected (the running config stayed)", registry=registry)
        self._digest: str | None = None

    def in_force(self, digest: str) -> None:
        if self._digest is not None and self._digest != digest:
            self.version_info.remove(self._digest)
        self.version_info.labels(digest).set(1)
        self._digest = digest


class ConfigReloader:
    """Holds the running config and replaces it when its source changes and
    the new text validates. The source is a file (``path``) or a version
    store (``store``); both may be given: the file is the start when the
    store has no version yet."""

    def __init__(self, path: str | Path | None = None, config: AppConfig | None = None, *,
                 store: VersionStore | None = None, metrics: ReloadMetrics | None = None,
                 digest: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.store = store
        self.config = config if config is not None else load_config(self.path)
        self.metrics = metrics
        self.status = ReloadStatus(digest=digest if digest is not None else self._digest())
        self._listeners: list[Listener] = []
        # A config experiment in force (config.experiment): ``config`` is its
        # base, the candidate runs for its users. Listeners read it here.
        self.experiment: RunningExperiment | None = None
        if metrics is not None:
            metrics.in_force(self.status.digest)

    def attach(self, metrics: ReloadMetrics) -> None:
        """Report on ``metrics`` from now on (a process whose registry is made
        after its config)."""
        self.metrics = metrics
        metrics.in_force(self.status.digest)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _digest(self) -> str:
        if self.path is None:
            return ""
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return ""

    def poll(self) -> bool:
        """Reload if the file's content changed; True when a new config took effect."""
        digest = self._digest()
        if self.path is None or not digest or digest == self.status.digest:
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.status.digest = digest
            return self._refuse([f"cannot read {self.path}: {exc}"], str(self.path))
        return self.offer(text, str(self.path), digest)

    async def follow(self) -> bool:
        """Take the store's current version if it is new (an experiment's
        candidate: its base in force, the candidate for its users); True
        when it took effect."""
        if self.store is None:
            return False
        try:
            versions = await self.store.versions()
        except Exception:  # the store is down: keep running what we have
            log.warning("config store unreachable; the running config stays", exc_info=True)
            return False
        latest = current(versions)
        if latest is None:
            return False
        try:
            found = running(versions)
        except SceneTriggerError as exc:  # its base is gone: refuse, keep running
            key = latest.digest
            if key != self.status.digest:
                self.status.digest = key
                return self._refuse([str(exc)], f"config v{latest.version}")
            return False
        if found is not None:
            return self.offer_experiment(*found)
        if latest.digest == self.status.digest:
            return False
        taken = self.offer(latest.text, f"config v{latest.version}", latest.digest)
        if taken:
            self.status.stored_version = latest.version
        return taken

    def offer_experiment(self, candidate: ConfigVersion, base: ConfigVersion) -> bool:
        """Put ``base`` in force with ``candidate`` running for its
        experiment's users; refused (once) when either does not validate."""
        spec = candidate.experiment
        assert spec is not None
        key = experiment_digest(base, candidate)
        if key == self.status.digest:
            return False
        source = f"config v{candidate.version}"
        try:
            trial = load_config_text(candidate.text, source=source)
        except ConfigError as exc:
            self.status.digest = key
            return self._refuse(exc.problems, source)
        before = self.experiment
        self.experiment = RunningExperiment(candidate.version, spec, trial, candidate.time_ms)
        taken = self.offer(base.text, f"config v{base.version} (experiment v{candidate.version})",
                           key, force=True)
        if taken:
            self.status.stored_version = candidate.version
        else:
            self.experiment = before
        return taken

    def offer(self, text: str, source: str, digest: str | None = None,
              force: bool = False) -> bool:
        """Validate ``text`` and put it in force; a bad one is refused (once).
        Without ``force`` a running experiment ends (its base or candidate
        text offered plainly: a promote or rollback)."""
        digest = digest or digest_of(text)
        if digest == self.status.digest:
            return False
        before = self.experiment
        if not force:
            self.experiment = None
        self.status.digest = digest  # a bad one is reported once, not on every poll
        try:
            new = load_config_text(text, source=source)
        except ConfigError as exc:
            self.experiment = before
            return self._refuse(exc.problems, source)
        previous, self.config = self.config, new
        try:  # a process may refuse what it cannot build (a channel's missing secret)
            for listener in self._listeners:
                listener(new)
        except ConfigError as exc:
            self.config, self.experiment = previous, before
            return self._refuse(exc.problems, source)
        self.status.version += 1
        self.status.last_error = []
        if self.metrics is not None:
            self.metrics.in_force(digest)
        log.warning("config reloaded", extra={"source": source, "version": self.status.version,
                                              "digest": digest})
        return True

    def _refuse(self, problems: list[str], source: str) -> bool:
        self.status.last_error = problems
        self.status.rejected += 1
        if self.metrics is not None:
            self.metrics.failures.inc()
        log.error("config rejected; the running config stays",
                  extra={"source": source, "problems": problems})
        return False


def experiment_digest(base: ConfigVersion, candidate: ConfigVersion) -> str:
    """What a process runs during an experiment: both texts and the draw."""
    spec = candidate.experiment
    share = "" if spec is None else f"{spec.share!r}"
    return digest_of(f"{base.digest}+{candidate.digest}@v{candidate.version}:{share}")
