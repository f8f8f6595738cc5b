"""``config_follow.following`` ends when its block does, even when the
store's client swallows the cancellation of a check or its close hangs: a
SIGTERM to ``deliver --config-store kafka`` must not wait on the store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from channels import infra_retry
from config.loader import load_config_text
from config.reload import ConfigReloader
from config.versions import ConfigVersion
from scenetrigger.cli import config_follow

CONFIG = """
scenes:
  arrival: {kind: arrival, when: {page: {prefix: /promo}}, per: page, cooldown: 1h}
"""


class SwallowingStore:
    """A store whose check, cancelled while it waits on the broker, returns
    anyway (as a client does when a reply and the cancel arrive together)."""

    def __init__(self, hang_close: bool = False) -> None:
        self.checking = asyncio.Event()
        self.checks = 0
        self.closed = False
        self.hang_close = hang_close

    async def versions(self) -> list[ConfigVersion]:
        self.checks += 1
        self.checking.set()
        with contextlib.suppress(asyncio.CancelledError):  # the cancellation is lost here
            await asyncio.sleep(0.05)
        return []

    async def append(self, version: ConfigVersion) -> None:
        raise AssertionError("not used")

    async def close(self) -> None:
        if self.hang_close:
            await asyncio.Event().wait()
        self.closed = True


def reloader(tmp_path: Path, store: SwallowingStore) -> ConfigReloader:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return ConfigReloader(path, load_config_text(CONFIG), store=store,
                          metrics=None, digest="")


async def exits_within(store: SwallowingStore, tmp_path: Path, seconds: float) -> float:
    async def follow() -> None:
        async with config_follow.following(reloader(tmp_path, store), 1):
            await store.checking.wait()
            await asyncio.sleep(0.01)  # inside a check: the exit's cancel lands there

    started = time.monotonic()
    task = asyncio.create_task(follow())
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
    assert done, "following() did not end after its block"
    task.result()
    return time.monotonic() - started


async def test_following_ends_when_a_check_swallows_the_cancellation(tmp_path: Path) -> None:
    store = SwallowingStore()
    assert await exits_within(store, tmp_path, 5) < 2
    assert store.closed
    checks = store.checks
    await asyncio.sleep(0.1)
    assert store.checks == checks  # no check after the exit


async def test_a_hanging_store_close_is_abandoned_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(infra_retry, "STOP_WAIT_S", 0.2)
    store = SwallowingStore(hang_close=True)
    assert await exits_within(store, tmp_path, 5) < 2
    assert not store.closed
    assert any(getattr(r, "task", None) == "config store close" for r in caplog.records)


def test_a_task_that_swallows_its_cancellation_does_not_keep_the_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from scenetrigger.cli.support import run_stoppable

    monkeypatch.setattr(infra_retry, "STOP_WAIT_S", 0.2)

    async def stubborn() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    async def main() -> int:
        asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        return 3

    started = time.monotonic()
    assert run_stoppable(main()) == 3  # asyncio.run would wait for it forever
    assert time.monotonic() - started < 2
