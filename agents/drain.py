"""Settle pending batches while Faust waits for the streams to be empty.

With ``stream_wait_empty`` Faust waits (``Consumer.wait_empty``) until every
message taken is acked, at a rebalance and when the worker stops
(``App.on_stop`` -> ``_stop_consumer``). The agent defers its acks
(``agents.app``): a partition's last batch is acked by the agent when more
of its messages come, or by the sweep once the batch is quiet. Neither
happens at a stop: the flow is stopped before the wait, so no message comes,
and the sweep is an app timer, which ends as soon as the app is stopping.
Faust then waited for the batches forever (SIGKILL after a minute).

:func:`settle_while_waiting_empty` wraps ``consumer.wait_empty`` so that,
for as long as Faust waits, every partition whose triggers are acknowledged
is settled (states written, messages acked) every ``interval_s``; Faust's
wait then ends, and its final commit includes those offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

_INSTALLED = "_scenetrigger_settle_while_waiting"
SETTLE_INTERVAL_S = 0.02


def settle_while_waiting_empty(consumer: Any, settle: Callable[[], None],
                               interval_s: float = SETTLE_INTERVAL_S) -> None:
    """Wrap ``consumer.wait_empty`` to call ``settle()`` every ``interval_s``
    while it runs (``settle`` must not await: it runs beside the agent).
    Idempotent."""
    if getattr(consumer, _INSTALLED, False):
        return
    original: Callable[[], Awaitable[None]] = consumer.wait_empty

    async def settle_loop() -> None:
        while True:
            try:
                settle()
            except Exception:  # a failed trigger send: keep settling the rest
                log.exception("settle while waiting for the streams failed")
            await asyncio.sleep(interval_s)

    async def wait_empty() -> None:
        settler = asyncio.ensure_future(settle_loop())
        try:
            await original()
        finally:
            settler.cancel()

    consumer.wait_empty = wait_empty
    setattr(consumer, _INSTALLED, True)
