"""Start an aiohttp app on a host and port (0: a free one) and say where;
or keep one listening socket whose app a new one replaces (a config reload)."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """The started runner and its base URL ``http://host:port`` (IPv6 in brackets).
    A site that cannot start is cleaned up before the error propagates."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
    return runner, f"http://{shown}:{bound_port}"


_GRACE_S = 0.5


class SwappableSite:
    """An app on one listening socket that stays open for the process's
    life. A new app (a new config's) replaces the old one on it: the old stops
    accepting, the new accepts (connections arriving between wait in the
    socket's backlog), the old finishes its requests in flight. No connection
    is refused while it changes."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one change at a time, in order

    @classmethod
    def listen(cls, host: str, port: int) -> SwappableSite:
        """Bind ``host:port`` (0: a free port); raises OSError when it cannot."""
        return cls(socket.create_server((host, port)))

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    async def serve(self, app: web.Application) -> None:
        async with self._lock:
            await self._serve(app)

    async def _serve(self, app: web.Application) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        old, self._runner = self._runner, runner
        if old is not None:  # stop accepting: new connections wait in the socket's backlog
            for site in list(old.sites):
                await site.stop()
        await web.SockSite(runner, self._listener.dup()).start()
        if old is not None:
            # Connections the old server accepted just before it stopped have
            # not sent their request yet: cleanup would close them as idle
            # (a grace, not a guarantee, on a machine too busy to read them).
            await asyncio.sleep(_GRACE_S)
            await old.cleanup()  # requests in flight finish on the old app

    def replace(self, app: web.Application) -> None:
        """Serve ``app`` instead, from now on (from a synchronous listener)."""
        task = asyncio.get_running_loop().create_task(self.serve(app))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            await task
        if self._runner is not None:
            await self._runner.cleanup()
        self._listener.close()
