"""Hot reload: poll a config file and swap in a new config only when it validates.

A bad edit is reported (every problem, scene and field named) and the running
config stays in force. Runtimes call :meth:`ConfigReloader.poll` from their own
loop (embedded runtime, worker timer), so there is no thread and no global.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config.loader import load_config
from config.models import AppConfig
from triggers.errors import ConfigError

log = logging.getLogger(__name__)

Listener = Callable[[AppConfig], None]


@dataclass
class ReloadStatus:
    """What the last reload attempt did (shown on admin pages and metrics)."""

    version: int = 1
    digest: str = ""
    last_error: list[str] = field(default_factory=list)
    rejected: int = 0


class ConfigReloader:
    """Holds the running config and replaces it when the file changes and validates."""

    def __init__(self, path: str | Path, config: AppConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config if config is not None else load_config(self.path)
        self.status = ReloadStatus(digest=self._digest())
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _digest(self) -> str:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return ""

    def poll(self) -> bool:
        """Reload if the file's content changed; True when a new config took effect."""
        digest = self._digest()
        if not digest or digest == self.status.digest:
            return False
        self.status.digest = digest  # a bad file is reported once, not on every poll
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            self.status.last_error = exc.problems
            self.status.rejected += 1
            log.error(
                "config rejected; the running config stays",
                extra={"path": str(self.path), "problems": exc.problems},
            )
            return False
        self.config = new
        self.status.version += 1
        self.status.last_error = []
        log.warning(
            "config reloaded", extra={"path": str(self.path), "version": self.status.version}
        )
        for listener in self._listeners:
            listener(new)
        return True
