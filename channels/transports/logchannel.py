"""Dry-run channel: records messages instead of sending them.

The demo's dry-run mode and tests read :attr:`LogChannel.records`; with a
``path`` every message is also appended there as one JSON line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from channels.base import BuildContext, ChannelKind, DeliveryResult, Message
from channels.transports.wire import message_to_json
from config.channel_models import LogModel

log = logging.getLogger("scenetrigger.channels.log")


@dataclass(slots=True)
class LogChannel:
    name: str = "log"
    path: str | Path | None = None
    max_records: int = 10_000
    records: deque[Message] = field(init=False, repr=False)
    _file: IO[bytes] | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock | None = field(default=None, init=False, repr=False)

    retries_internally = True  # nothing to retry

    def __post_init__(self) -> None:
        self.records = deque(maxlen=self.max_records)

    async def send(self, message: Message) -> DeliveryResult:
        self.records.append(message)
        log.info("dry-run delivery", extra={"channel": self.name, "user_id": message.user_id,
                                            "scene": message.scene,
                                            "message_id": message.message_id})
        if self.path is not None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                try:
                    await asyncio.to_thread(self._append, self.path,
                                            message_to_json(message) + b"\n")
                except OSError as exc:
                    return DeliveryResult(False, self.name, message.message_id, 1,
                                          f"cannot write {self.path}: {exc}", True)
        return DeliveryResult(True, self.name, message.message_id)

    def _append(self, path: str | Path, line: bytes) -> None:
        if self._file is None:
            self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._file.write(line)
        self._file.flush()

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def build(name: str, model: LogModel, context: BuildContext) -> LogChannel:
    """A ``type: log`` channel: records, and appends to ``path`` when set."""
    return LogChannel(name, model.path, model.max_records)


KIND = ChannelKind("log", LogModel, build)
