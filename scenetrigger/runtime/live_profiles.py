"""The embedded runtime's side of the live profile store: no topic, the
profiles go straight into Redis.

After every tick of an :class:`~scenetrigger.runtime.embedded.EmbeddedRuntime`
(``scenetrigger demo --deliver live``), each user whose events of the tick
changed their profile is written once through
:class:`channels.audience.live_profile.LiveProfileStore`, as
``scenetrigger profiles`` writes the worker's records; an identified
anonymous id, whose state moved to the known user, is deleted. ``updated_ms``
is the wall clock, never the demo's simulated clock: that runs ahead of real
time, and a store holding a profile "from the future" would refuse every
later writer's (newer wins). Replay writes no profiles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from channels.audience.live_profile import LiveProfileStore
from config.clock import wall_ms

if TYPE_CHECKING:
    from scenetrigger.runtime.embedded import EmbeddedRuntime

log = logging.getLogger("scenetrigger.runtime.live_profiles")

_IN_FLIGHT = 64  # Redis calls side by side


class ProfileWriter:
    """Writes the profiles a runtime's ticks changed (see the module doc)."""

    def __init__(self, store: LiveProfileStore, now_ms: Callable[[], int] = wall_ms) -> None:
        self.store = store
        self._now_ms = now_ms
        self._changed: set[str] = set()
        self._runtime: EmbeddedRuntime | None = None
        self.written = 0
        self.deleted = 0

    def attach(self, runtime: EmbeddedRuntime) -> None:
        self._runtime = runtime
        self._changed = runtime.track_profiles()
        runtime.add_ticker(self.tick)

    async def tick(self, _sim_ms: int) -> None:
        if not self._changed or self._runtime is None:
            return
        users = sorted(self._changed)
        self._changed.clear()
        states = self._runtime.engine.store
        now = self._now_ms()
        slots = asyncio.Semaphore(_IN_FLIGHT)

        async def write(user_id: str) -> None:
            async with slots:
                state = states.get(user_id)
                if state is None:  # an identified anonymous id: it is the known user now
                    await self.store.delete(user_id)
                    self.deleted += 1
                else:
                    await self.store.put(user_id, state.profile, now)
                    self.written += 1

        await asyncio.gather(*(write(user) for user in users))
